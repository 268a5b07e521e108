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
    from driftar_core.plugins import registries
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
    from driftar_core.plugins import registries
    card = registries().cards.get(name)
    data = card.model_dump(mode="json")
    data["path"] = str(card.weights_path)
    click.echo(json.dumps(data, indent=2))


@zoo.command("publish")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--name", required=True, help="arch.tag name of the entry, e.g. mar_tiny.digits.")
@click.option("--out", "out_root", default="zoo/driftar_zoo/models", show_default=True, type=click.Path(file_okay=False))
@click.option("--command", "made_by", required=True, help="The exact command that trained the run (goes on the card).")
@click.option("--eval-samples", type=int, default=None, help="Images per seed for the card's metrics (default 359).")
@click.option("--eval-seeds", default=3, show_default=True)
@click.option("--notes", default="", help="Free text for the card.")
def zoo_publish(run: str, name: str, out_root: str, made_by: str, eval_samples: int | None, eval_seeds: int,
                notes: str) -> None:
    """Copy RUN's final model into the zoo, measure it with `driftar eval`, and write its card."""
    from pathlib import Path

    from driftar_core.bench import default_sampler
    from driftar_core.eval.evaluate import evaluate, own_sampler_batch
    from driftar_core.resolve import find_model_dir, load_model
    from driftar_core.seeds import eval_seeds as eval_seeds_of
    from driftar_core.zoo import make_card
    src = find_model_dir(run)
    arch, _, tag = name.partition(".")
    bundle = load_model(str(src))
    if bundle.arch != arch:
        raise click.BadParameter(f"the run's model is {bundle.arch!r}, not {arch!r}", param_hint="--name")
    seeds, batch = eval_seeds_of(eval_seeds), own_sampler_batch(bundle)    # held-out seeds, its own sampler
    report = evaluate(bundle, num_samples=eval_samples, seeds=seeds, sampler=default_sampler(bundle), batch_size=batch)
    keys = ("fd", "fd_std", "fd_floor", "fd_halves", "class_accuracy", "class_accuracy_std", "precision", "recall",
            "density", "coverage")
    metrics = {k: round(float(report[k]), 4) for k in keys if report.get(k) is not None}
    metrics.update({f"{k}_per_image": v for k, v in report.get("counts", {}).items() if k in ("backbone_passes", "head_nfe", "nfe")})
    metrics["eval_samples"] = report.get("num_samples", eval_samples)
    metrics.update(eval_seeds=list(seeds), eval_batch=batch)
    dest = Path(out_root) / name
    readme = (f"# {name}\n\n{notes}\n\nMade by:\n\n```bash\n{made_by}\ndriftar zoo publish RUN --name {name} --command '...'\n```\n\n"
              f"Parameters: {bundle.num_params():,}. Metrics (driftar eval, {eval_seeds} seeds, mean):\n\n"
              + "\n".join(f"- {k}: {v}" for k, v in metrics.items()) + "\n")
    bundle.save(dest, card=readme)                      # weights, config and README, each written atomically
    make_card(dest, name, num_params=bundle.num_params(), metrics=metrics, command=made_by,
              dataset="digits (scikit-learn, 16x16, train split of driftar_core.data.digits)",
              backbone=bundle.backbone_name, notes=notes)
    click.echo(f"published {name} to {dest}: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
