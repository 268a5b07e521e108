"""What is exported: one GraphSpec per role (spec.py), built by the backbone adapters (masked.py, causal.py)."""
