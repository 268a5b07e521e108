"""driftar-tinycausal: an example third-party backbone plugin (see README.md)."""
