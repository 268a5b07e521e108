"""``driftar bench``: latency, passes and quality of several models side by side, as ratios."""
from __future__ import annotations

import click

from driftar_core.cli.options import COUNT, FiniteFloat


@click.command("bench")
@click.option("--models", "-m", "models", multiple=True, required=True,
              help="Models to compare (names or paths); repeat the flag or give several after one flag. "
                   "Append @plain (or @speculative) to choose how a model with a draft decodes. "
                   "The first is the reference of every ratio.")
@click.argument("more_models", nargs=-1)
@click.option("--repeats", type=COUNT, default=5, show_default=True, help="Timed repeats per model and batch size.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True, help="Untimed repeats per model and batch size.")
@click.option("--burn-in", "burn_in", type=FiniteFloat(min=0.0, max=600.0), default=3.0, show_default=True,
              help="Seconds of untimed sampling before the first timed repeat (the CPU up to speed).")
@click.option("--eval-samples", type=COUNT, default=None, help="Samples per seed for FD (default: the test-set size).")
@click.option("--eval-seeds", type=COUNT, default=3, show_default=True, help="Evaluation seeds for the quality spread (from 2000: held out, driftar_core.seeds).")
@click.option("--no-quality", is_flag=True, help="Skip FD/precision/recall (latency and passes only).")
@click.option("--threads", type=COUNT, default=None, help="torch threads (default: torch's choice).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False), default=None)
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None)
def bench(models: tuple[str, ...], more_models: tuple[str, ...], repeats: int, warmup: int, burn_in: float,
          eval_samples: int | None, eval_seeds: int, no_quality: bool, threads: int | None, json_out: str | None, md_out: str | None,
          plot_out: str | None) -> None:
    """Benchmark models in one process (e.g. --models mar_tiny.digits mar_tiny_drift.digits)."""
    import torch

    from driftar_core.bench import run_bench, to_markdown, write_outputs
    from driftar_core.files import check_writable_file
    from driftar_core.seeds import eval_seeds as eval_seeds_of
    for option, path in (("--json", json_out), ("--markdown", md_out), ("--plot", plot_out)):
        if path:
            check_writable_file(path, option)            # before the benchmark, not after it
    if threads:
        torch.set_num_threads(threads)
    names = list(models) + list(more_models)
    report = run_bench(names, repeats=repeats, warmup=warmup, burn_in_s=burn_in, eval_samples=eval_samples,
                       eval_seeds=eval_seeds_of(eval_seeds), quality=not no_quality)
    write_outputs(report, json_out, md_out, plot_out)
    click.echo(to_markdown(report))
