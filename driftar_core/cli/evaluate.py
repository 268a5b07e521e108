"""``driftar eval``: sample quality of one model against the held-out digits."""
from __future__ import annotations

import json

import click

from driftar_core.cli.options import COUNT, sampling_options


@click.command("eval")
@click.option("--model", "-m", "model", required=True, help="Run dir, model dir, or name (mar_tiny.digits).")
@click.option("--num-samples", type=COUNT, default=None, help="Images per seed (default: the test-split size, 359).")
@click.option("--seeds", type=COUNT, default=3, show_default=True,
              help="Number of evaluation seeds, from 2000 (or --seed): held out from training and tuning.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the full report.")
@sampling_options
def eval_cmd(model: str, num_samples: int | None, seeds: int, json_out: str | None, num_iter: int | None,
             cfg: float | None, temperature: float | None, seed: int) -> None:
    """FD (with its real-vs-real floor), precision/recall, class accuracy and passes per image."""
    from driftar_core.bench import default_sampler
    from driftar_core.eval.evaluate import evaluate, own_sampler_batch
    from driftar_core.files import check_writable_file
    from driftar_core.resolve import load_model, sampling_overrides
    from driftar_core.seeds import eval_seeds as eval_seeds_of
    if json_out:
        check_writable_file(json_out, "--json")          # before the sampling, not after it
    bundle = load_model(model, say=lambda m: click.echo(m, err=True))
    kwargs = sampling_overrides(bundle, num_iter=num_iter, cfg=cfg, temperature=temperature)
    given = click.get_current_context().get_parameter_source("seed") != click.core.ParameterSource.DEFAULT
    seed_list = eval_seeds_of(seeds, seed if given else None)   # held-out evaluation seeds (driftar_core.seeds)
    batch = own_sampler_batch(bundle)                        # a speculative model: scored on speculative samples
    report = evaluate(bundle, num_samples=num_samples, seeds=seed_list, sample_kwargs=kwargs,
                      sampler=default_sampler(bundle), batch_size=batch)
    report["model"] = model
    if json_out:
        from pathlib import Path

        from driftar_core.bundle import atomic_write_text
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(json_out), json.dumps(report, indent=2, default=str))
    c = report.get("counts", {})
    click.echo(f"{model}: FD {report['fd']:.1f} +- {report['fd_std']:.1f} (real-vs-real floor at this size "
               f"{report['fd_floor']:.1f}; test halves {report['fd_halves']:.1f}); class accuracy "
               f"{report['class_accuracy']:.3f}; precision {report['precision']:.3f}; recall {report['recall']:.3f}; "
               f"passes per image: backbone {c.get('backbone_passes')}, head NFE {c.get('head_nfe')}")
