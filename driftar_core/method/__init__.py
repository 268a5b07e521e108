"""The Drift-AR method (arXiv 2603.28049): entropy, prior, drift decoder, drift loss, draft model.

entropy.py        Eq. 4   causal-normalised attention entropy E
prior.py          Eq. 6-7 sigma(E) with a sigma_min floor; x0 = mu(z) + sigma(E) eps
drift_loss.py     Eq. 8   the drifting field and loss ("Generative Modeling via Drifting"), collapse monitors
drift_decoder.py          the per-token 1-NFE drift decoder (TokenHead) with Entropy-AdaLN
draft.py          Eq. 3   the causal draft model with draft-target entropy alignment
schedule.py       Eq. 9-10 the two-phase annealing schedule
configs.py                the Drift-AR config section (DriftARConfig) and its parts
assemble.py               a backbone's Drift-AR bundle, built from its DriftARConfig

Nothing is imported here, so importing the package stays cheap; import the modules directly.
"""
