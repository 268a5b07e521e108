"""Datasets: the bundled scikit-learn digits (default, no download) and ImageFolder for user images."""
