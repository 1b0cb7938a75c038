"""edges.gates."""
