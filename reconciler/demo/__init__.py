"""Demo support: a tiny test application packaged as deploy_app artifacts."""
