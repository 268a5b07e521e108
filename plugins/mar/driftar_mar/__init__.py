"""driftar-mar: MAR (Li et al. 2024, arXiv 2406.11838) as a driftar plugin.

Modules: ``config`` (MARConfig), ``diffusion`` (IDDPM cosine diffusion), ``diffloss`` (the DiffLoss
token head), ``mar`` (the backbone), ``presets`` (sizes), ``build`` (bundle factory), ``plugin``
(hook implementations). Importing the package imports nothing heavy.
"""
