"""The Drift-AR method (arXiv 2603.28049): entropy, prior, drift decoder, drift loss, draft model."""
