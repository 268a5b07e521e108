"""Evaluation: a small digits classifier (the evaluator), FD / precision / recall / class accuracy, and
``evaluate(bundle)``, which samples a model and scores it against the held-out real digits.

The evaluator is only ever used to MEASURE samples, never as a training signal (docs/layout.md "Data and
evaluation"). Import the submodules directly; nothing here imports torch at package import time.
"""
