"""Tokenizers: images <-> continuous tokens (``patch`` here; a KL-16 VAE for real data)."""
