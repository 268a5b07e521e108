"""``driftar export``: a trained model -> deployable graphs, through whichever exporter plugin registered
``--target`` (``driftar_register_exporters``; driftar-export ships ``onnx`` and ``tensorrt``).

The exporter is looked up, its options validated (``preflight``, when it has one: missing TensorRT
fails here) and its destination checked (``check_out``, when it has one: an unwritable parent, a
directory that is not the exporter's own) BEFORE the model is loaded, so a bad target, option,
machine or --out costs nothing.
"""
from __future__ import annotations

import click

from driftar_core.cli.options import COUNT

EXPORT_HINT = "the onnx and tensorrt exporters come with driftar-export (pip install -e ./export)"


@click.command("export")
@click.option("--model", "-m", "model", required=True, help="Run dir, model dir, or name (e.g. mar_tiny_drift.digits).")
@click.option("--target", "-t", required=True, help="Exporter name: onnx or tensorrt (driftar plugins lists them).")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Bundle directory to write.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Exporter option, e.g. --set max_batch=8 --set opset=20 (repeatable; unknown keys fail).")
@click.option("--threads", type=COUNT, default=None, help="torch threads (default: torch's choice).")
def export(model: str, target: str, out: str, overrides: tuple[str, ...], threads: int | None) -> None:
    """Export a Drift-AR model: graphs with plain tensor I/O, a manifest with parity results."""
    from driftar_core.bundle import CheckpointError
    from driftar_core.config import ConfigError, parse_overrides
    from driftar_core.plugins import registries
    from driftar_core.registry import UnknownNameError
    try:
        exporter = registries().exporters.get(target)()
    except UnknownNameError as e:
        raise click.ClickException(f"{e}; {EXPORT_HINT}") from None
    options = parse_overrides(overrides)
    try:
        exporter.preflight(**options)         # driftar_core.interfaces.Exporter: before the model is loaded
        exporter.check_out(out)
        import torch

        from driftar_core.resolve import load_model
        if threads:
            torch.set_num_threads(threads)
        bundle = load_model(model)
        exporter(bundle, out, ref=model, log=click.echo, **options)
    except (ConfigError, CheckpointError):
        raise                                  # main() prints these as one-line errors
    except ValueError as e:                    # the exporter's own errors say what is wrong and what to do
        raise click.ClickException(str(e)) from None
