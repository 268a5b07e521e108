"""Errors that are about the user's input or artifacts, not driftar's bugs. Torch-free.

``driftar`` prints these (and the other kinds in ``driftar_core.cli.expected_errors``) as one
``Error: ...`` line (exit code 2); their messages say what to do. This module imports nothing, so
every layer can raise them.
"""
from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint or model directory that cannot be loaded (missing file, corrupt, or keys that do not match)."""


class NonFiniteError(ValueError):
    """NaN or inf in weights or in generated samples: an error, never pixels."""
