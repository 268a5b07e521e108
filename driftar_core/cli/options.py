"""Option bundles shared by commands (click decorators)."""
from __future__ import annotations

import click

set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config value, e.g. --set optim.lr=3e-4 --set model.args.encoder_depth=2 (repeatable).")


def sampling_options(f):
    """--num-iter/--cfg/--temperature/--seed; unset values fall back to the model's own defaults."""
    f = click.option("--seed", default=0, show_default=True, type=int, help="Seed of orders and noise.")(f)
    f = click.option("--temperature", type=float, default=None, help="Head temperature (model default if unset).")(f)
    f = click.option("--cfg", type=float, default=None, help="CFG scale (model default if unset).")(f)
    f = click.option("--num-iter", type=int, default=None, help="AR steps (model default if unset).")(f)
    return f


def speculative_options(f):
    """--speculative/--no-speculative, --draft-len, --tau0, --kappa (unset: the model's own defaults)."""
    f = click.option("--kappa", type=float, default=None, help="Entropy-scaled tolerance: kappa * sigma(E_target).")(f)
    f = click.option("--tau0", type=float, default=None, help="Absolute acceptance tolerance (token RMS units).")(f)
    f = click.option("--draft-len", type=int, default=None, help="Drafted tokens per verification pass (k).")(f)
    f = click.option("--speculative/--no-speculative", default=None,
                     help="Speculative decoding with the model's draft (default: the model's own choice; "
                          "on for nextstep1_tiny_drift).")(f)
    return f
