"""Sampling settings swept over ONE grid for a model and its baseline, on tuning seeds only.

Every model gets the same grid of classifier-free guidance x temperature (the decoder's noise scale)
and is scored with ``driftar_core.eval.evaluate`` (FD against the test split, class accuracy) on
TUNING seeds (``driftar_core.seeds``), never on evaluation seeds. A speculative model is scored on its
own speculative samples (at the batch size its default sampler speculates). The best setting per
model is reported next to the model's shipped default; a default that changes is then re-evaluated
on the held-out seeds (``driftar eval``), which this script does not do.

    python benchmarks/sampling_sweep.py --models mar_tiny.digits mar_tiny_drift.digits \
        --cfg 2 3 4 --temperature 0.9 1.0 1.2 1.4 --json benchmarks/results/mar_sampling_sweep.json \
        --markdown benchmarks/results/mar_sampling_sweep.md
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import torch

from driftar_core.bench import default_sampler
from driftar_core.eval.evaluate import evaluate, own_sampler_batch
from driftar_core.resolve import load_model
from driftar_core.seeds import TUNING, check


def sweep(models: list[str], cfgs: list[float], temperatures: list[float], seeds: tuple[int, ...],
          num_samples: int | None) -> dict[str, Any]:
    check("tuning", seeds, TUNING)
    rows = []
    for name in models:
        bundle = load_model(name)
        sampler, batch = default_sampler(bundle), own_sampler_batch(bundle)
        default = bundle.config.sampling
        for cfg, temperature in itertools.product(cfgs, temperatures):
            t0 = time.perf_counter()
            q = evaluate(bundle, num_samples=num_samples, seeds=seeds, sampler=sampler, batch_size=batch,
                         sample_kwargs={"cfg": cfg, "temperature": temperature}, progress=False)
            rows.append({"model": name, "cfg": cfg, "temperature": temperature, "fd": q["fd"], "fd_std": q["fd_std"],
                         "class_accuracy": q["class_accuracy"], "recall": q["recall"], "precision": q["precision"],
                         "default": (cfg, temperature) == (default.cfg, default.temperature),
                         "seconds": time.perf_counter() - t0})
            print(f"{name} cfg {cfg:g} temperature {temperature:g}: FD {q['fd']:.1f} +- {q['fd_std']:.1f}, "
                  f"class accuracy {q['class_accuracy']:.3f}", flush=True)
    return {"seeds": list(seeds), "num_samples": num_samples, "grid": {"cfg": cfgs, "temperature": temperatures},
            "rows": rows, "best": {m: min((r for r in rows if r["model"] == m), key=lambda r: r["fd"]) for m in models}}


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"Tuning seeds {report['seeds']}; FD mean +- std over them; * = the model's shipped default.", "",
             "| model | cfg | temperature | FD | class acc. | precision | recall |", "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        best = report["best"][r["model"]] is r
        lines.append(f"| `{r['model']}` | {r['cfg']:g} | {r['temperature']:g}{' *' if r['default'] else ''} | "
                     f"{'**' if best else ''}{r['fd']:.1f} +- {r['fd_std']:.1f}{'**' if best else ''} | "
                     f"{r['class_accuracy']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--cfg", type=float, nargs="+", required=True)
    ap.add_argument("--temperature", type=float, nargs="+", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[TUNING[0], TUNING[1]], help="tuning seeds (1000-1999)")
    ap.add_argument("--num", type=int, default=None, help="images per seed (default: the test split's size)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--markdown", dest="md_out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = sweep(args.models, args.cfg, args.temperature, tuple(args.seeds), args.num)
    md = to_markdown(report)
    print(md)
    for path, text in ((args.json_out, json.dumps(report, indent=2, default=str)), (args.md_out, md)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)


if __name__ == "__main__":
    main()
