"""Errors that are about the user's input or artifacts, not driftar's bugs. Torch-free.

``driftar`` prints these as one ``Error: ...`` line (exit code 2); their messages say what to do.
"""
from __future__ import annotations


class NonFiniteError(ValueError):
    """NaN or inf in weights or in generated samples: an error, never pixels."""


def expected_errors() -> tuple[type[BaseException], ...]:
    """Every error class the CLI reports as a one-line message instead of a traceback."""
    from driftar_core.bundle import CheckpointError
    from driftar_core.config import ConfigError
    from driftar_core.files import IntegrityError, LockedError
    from driftar_core.registry import DuplicateNameError, UnknownNameError
    return (ConfigError, UnknownNameError, DuplicateNameError, CheckpointError, NonFiniteError, IntegrityError,
            LockedError, OSError,   # OSError: missing / unwritable / not-a-directory paths, a full disk
            FloatingPointError)     # a diverged training loss (the message names the last good checkpoint)
