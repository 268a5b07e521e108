"""``driftar zoo list|info``: the pretrained models registered by zoo plugins (local files only)."""
from __future__ import annotations

import json

import click


@click.group("zoo")
def zoo() -> None:
    """Pretrained models (arch.tag names) shipped with installed plugins."""


@zoo.command("list")
@click.argument("pattern", default="*")
def zoo_list(pattern: str) -> None:
    """List pretrained models matching PATTERN with their key metrics."""
    from driftar_core.registry import registries
    reg = registries()
    for name in reg.cards.names(pattern):
        card = reg.cards.get(name)
        m = card.metrics
        keys = [k for k in ("fd", "fd_floor", "class_accuracy", "test_accuracy") if k in m]
        summary = ", ".join(f"{k} {m[k]:.4g}" if isinstance(m[k], float) else f"{k} {m[k]}" for k in keys)
        click.echo(f"{name:32s} {card.kind:9s} {card.num_params:>10,d} params  {summary}")


@zoo.command("info")
@click.argument("name")
def zoo_info(name: str) -> None:
    """Show the full model card of NAME (e.g. mar_tiny.digits)."""
    from driftar_core.registry import registries
    card = registries().cards.get(name)
    data = card.model_dump(mode="json")
    data["path"] = str(card.weights_path)
    click.echo(json.dumps(data, indent=2))
