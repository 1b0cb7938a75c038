"""edges.ansible."""
