"""edges.git."""
