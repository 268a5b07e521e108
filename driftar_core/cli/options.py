"""Option bundles and value types shared by commands (click decorators).

Every numeric option is validated by its click type, before any model is loaded: a count is an
integer >= 1, a float is finite and in its range. Bad values end as a usage error naming the option.
"""
from __future__ import annotations

import math

import click

COUNT = click.IntRange(min=1)                   # -n, --batch-size, --per-class, --num-iter, --threads
SEED = click.IntRange(min=0, max=2**63 - 1)     # torch.Generator.manual_seed's range


class FiniteFloat(click.ParamType):
    """A finite float with optional bounds (``open_min``: strictly above ``min``)."""

    name = "float"

    def __init__(self, min: float | None = None, open_min: bool = False, max: float | None = None):
        self.min, self.open_min, self.max = min, open_min, max

    def convert(self, value, param, ctx):  # noqa: ANN001 (click's signature)
        if isinstance(value, float) and math.isfinite(value):
            x = value
        else:
            try:
                x = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.min is not None and (x <= self.min if self.open_min else x < self.min):
            self.fail(f"{x:g} must be {'>' if self.open_min else '>='} {self.min:g}", param, ctx)
        if self.max is not None and x > self.max:
            self.fail(f"{x:g} must be <= {self.max:g}", param, ctx)
        return x

    def __repr__(self) -> str:
        return f"FiniteFloat(min={self.min}, open_min={self.open_min})"


GUIDANCE = FiniteFloat(min=0.0)                  # CFG scale: 1 = off, 0 = unconditional
TEMPERATURE = FiniteFloat(min=0.0, open_min=True)
TOLERANCE = FiniteFloat(min=0.0)                 # tau0, kappa

set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config value, e.g. --set optim.lr=3e-4 --set model.args.encoder_depth=2 (repeatable). "
         "A multi-stage train applies it to every stage; STAGE:KEY=VALUE (baseline:, drift:, draft:) to one.")


def sampling_options(f):
    """--num-iter/--cfg/--temperature/--seed; unset values fall back to the model's own defaults."""
    f = click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of orders and noise.")(f)
    f = click.option("--temperature", type=TEMPERATURE, default=None, help="Head temperature (model default if unset).")(f)
    f = click.option("--cfg", type=GUIDANCE, default=None, help="CFG scale (model default if unset).")(f)
    f = click.option("--num-iter", type=COUNT, default=None, help="AR steps (model default if unset).")(f)
    return f


def speculative_options(f):
    """--speculative/--no-speculative, --draft-len, --tau0, --kappa (unset: the model's own defaults)."""
    f = click.option("--kappa", type=TOLERANCE, default=None, help="Entropy-scaled tolerance: kappa * sigma(E_target).")(f)
    f = click.option("--tau0", type=TOLERANCE, default=None, help="Absolute acceptance tolerance (token RMS units).")(f)
    f = click.option("--draft-len", type=COUNT, default=None, help="Drafted tokens per verification pass (k).")(f)
    f = click.option("--speculative/--no-speculative", default=None,
                     help="Speculative decoding with the model's draft (default: the model's own choice; "
                          "on for nextstep1_tiny_drift).")(f)
    return f
