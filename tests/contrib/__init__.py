"""The shipped Prometheus rules and Grafana dashboard, checked with promtool."""
