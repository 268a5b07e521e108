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
