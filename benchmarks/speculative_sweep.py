"""Speed / deviation trade-off of entropy-informed speculative decoding over the tolerance kappa.

For a Drift-AR model with a draft (default ``nextstep1_tiny_drift.digits``), every image is decoded at
batch 1 with its noise drawn ONCE and shared by all runs, so the sequential decoder (``generate``) is a
deterministic map and each speculative run's deviation from it is measured per sample
(docs/method.md "Acceptance statistics"):

- acceptance rate (committed drafts / drafts), mean accepted length, target and draft passes per image,
  the target-pass cut L / passes, median latency per image;
- token RMSE against the coupled sequential reference, by raster position and overall;
- image PSNR against the reference (peak-to-peak 2 for images in [-1, 1]; identical images count 100 dB);
- FD, class accuracy (driftar_core.eval) of each run's images, next to the sequential run's.

    python benchmarks/speculative_sweep.py --model nextstep1_tiny_drift.digits \
        --kappas 0 0.25 0.5 1 2 --json benchmarks/results/nextstep1_kappa_sweep.json \
        --markdown benchmarks/results/nextstep1_kappa_sweep.md --plot docs/img/kappa_sweep.png
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from driftar_core.eval.evaluate import default_evaluator, evaluate_images, reference
from driftar_core.resolve import load_model
from driftar_core.sampling import draw_noise, generate
from driftar_core.seeds import TUNING, check
from driftar_core.speculative import speculative_generate

PSNR_CAP = 100.0   # dB for identical images


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR [N] of images in [-1, 1] (peak-to-peak 2), capped at PSNR_CAP."""
    mse = (a - b).double().pow(2).flatten(1).mean(1)
    return (10 * torch.log10(4.0 / mse.clamp_min(1e-30))).clamp(max=PSNR_CAP)


def decode_all(bundle: Any, labels: torch.Tensor, noise: torch.Tensor, **spec: Any) -> dict[str, Any]:
    """Decode every image at batch 1 (speculatively when ``spec`` is given) -> tokens, images, stats."""
    tokens, images, times = [], [], []
    totals = {"backbone_passes": 0, "draft_passes": 0, "head_nfe": 0, "drafted": 0, "accepted": 0, "rounds": 0}
    for i in range(len(labels)):
        t0 = time.perf_counter()
        if spec:
            out = speculative_generate(bundle, labels[i:i + 1], noise=noise[i:i + 1], **spec)
        else:
            out = generate(bundle, labels[i:i + 1], noise=noise[i:i + 1])
        times.append(time.perf_counter() - t0)
        tokens.append(out.tokens)
        images.append(out.images)
        c = out.counts
        totals["backbone_passes"] += c.backbone_passes
        totals["draft_passes"] += c.draft_passes
        totals["head_nfe"] += c.head_nfe
        for k in ("drafted", "accepted", "rounds"):
            totals[k] += c.extra.get(k, 0)
    n = len(labels)
    stats = {"ms_per_image": 1e3 * statistics.median(times),
             "target_passes": totals["backbone_passes"] / n, "draft_passes": totals["draft_passes"] / n,
             "head_nfe": totals["head_nfe"] / n}
    if spec:
        stats.update(acceptance_rate=totals["accepted"] / max(totals["drafted"], 1),
                     mean_accepted_len=totals["accepted"] / max(totals["rounds"], 1))
    return {"tokens": torch.cat(tokens), "images": torch.cat(images), "stats": stats}


def training_entropy(bundle: Any, num: int = 256) -> float:
    """Mean target entropy E over the positions that see >= 2 keys, teacher-forced on training digits
    (the calibration of the early stop's running mean, docs/method.md "Early stop")."""
    from driftar_core.data.digits import DigitsDataset
    data = DigitsDataset(split="train")
    images = torch.stack([data[i][0] for i in range(min(num, len(data)))])
    labels = torch.tensor([data[i][1] for i in range(len(images))])
    out = bundle.backbone.forward_train(bundle.tokenizer.encode(images.to(bundle.device)), labels)
    return float(out.entropy[:, 1:].mean())


def sweep(model: str, kappas: list[float], tau0: float, draft_len: int, num: int, seed: int,
          gammas: list[float] = ()) -> dict[str, Any]:
    bundle = load_model(model)
    evaluator = default_evaluator()
    labels = reference(evaluator).labels(num)                             # class-balanced, as driftar eval
    L = bundle.tokenizer.token_shape[0]
    noise = draw_noise(bundle.head, num, L, torch.Generator().manual_seed(seed), bundle.device)
    rows = []
    with torch.inference_mode():
        ref = decode_all(bundle, labels, noise)
        q = evaluate_images(ref["images"], labels, evaluator=evaluator)
        rows.append({"run": "sequential", **ref["stats"], "target_pass_cut": L / ref["stats"]["target_passes"],
                     "fd": q["fd"], "class_accuracy": q["class_accuracy"], "token_rmse": 0.0,
                     "psnr_mean": PSNR_CAP, "psnr_median": PSNR_CAP, "rmse_by_position": [0.0] * L})
        for kappa in kappas:
            out = decode_all(bundle, labels, noise, draft_len=draft_len, tau0=tau0, kappa=kappa)
            diff = (out["tokens"] - ref["tokens"]).double().pow(2)          # [N, L, c]
            p = psnr(out["images"], ref["images"])
            q = evaluate_images(out["images"], labels, evaluator=evaluator)
            rows.append({"run": f"kappa={kappa:g}", "kappa": kappa, **out["stats"],
                         "target_pass_cut": L / out["stats"]["target_passes"],
                         "fd": q["fd"], "class_accuracy": q["class_accuracy"],
                         "token_rmse": math.sqrt(float(diff.mean())),
                         "psnr_mean": float(p.mean()), "psnr_median": float(p.median()),
                         "rmse_by_position": diff.mean((0, 2)).sqrt().tolist()})
        e_train = training_entropy(bundle)
        for gamma in gammas:                                              # the entropy early stop at the last kappa
            kappa = kappas[-1]
            out = decode_all(bundle, labels, noise, draft_len=draft_len, tau0=tau0, kappa=kappa,
                             early_stop_gamma=gamma, entropy_ema_init=e_train)
            diff = (out["tokens"] - ref["tokens"]).double().pow(2)
            p = psnr(out["images"], ref["images"])
            q = evaluate_images(out["images"], labels, evaluator=evaluator)
            rows.append({"run": f"kappa={kappa:g}, early stop gamma={gamma:g}", "kappa": kappa, "gamma": gamma,
                         **out["stats"], "target_pass_cut": L / out["stats"]["target_passes"],
                         "fd": q["fd"], "class_accuracy": q["class_accuracy"],
                         "token_rmse": math.sqrt(float(diff.mean())),
                         "psnr_mean": float(p.mean()), "psnr_median": float(p.median()),
                         "rmse_by_position": diff.mean((0, 2)).sqrt().tolist()})
    for r in rows:
        r["fd_ratio"] = r["fd"] / rows[0]["fd"]
        r["speedup_vs_sequential"] = rows[0]["ms_per_image"] / r["ms_per_image"]
    return {"model": model, "tau0": tau0, "draft_len": draft_len, "num_images": num, "seed": seed,
            "training_entropy": e_train,
            "batch_size": 1, "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}


def to_markdown(report: dict[str, Any]) -> str:
    cols = [("run", "run", None), ("acceptance_rate", "accept", 3), ("mean_accepted_len", "mean acc. len", 2),
            ("target_passes", "target passes/img", 1), ("target_pass_cut", "pass cut", 2),
            ("draft_passes", "draft passes/img", 1), ("ms_per_image", "ms/img b1", 1),
            ("speedup_vs_sequential", "vs sequential", 2), ("token_rmse", "token RMSE", 4),
            ("psnr_mean", "PSNR mean dB", 1), ("psnr_median", "PSNR median dB", 1), ("fd", "FD", 1),
            ("fd_ratio", "FD ratio", 3), ("class_accuracy", "class acc.", 3)]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in report["rows"]:
        cells = []
        for key, _, nd in cols:
            v = r.get(key)
            cells.append("-" if v is None else (f"{v:.{nd}f}" if nd is not None else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"`{report['model']}`, tau0 = {report['tau0']}, draft length {report['draft_len']}, "
                 f"{report['num_images']} images at batch 1 (seed {report['seed']}), {report['threads']} torch "
                 f"thread(s); deviation against the coupled sequential reference (same noise).")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in report["rows"] if "kappa" in r and "gamma" not in r]
    ks = [r["kappa"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    ax.plot(ks, [r["target_pass_cut"] for r in rows], "o-", label="target-pass cut (L / passes)")
    ax.plot(ks, [r["speedup_vs_sequential"] for r in rows], "s-", label="wall-clock vs sequential")
    ax.axhline(1.0, c="gray", lw=0.8)
    ax2 = ax.twinx()
    ax2.plot(ks, [r["acceptance_rate"] for r in rows], "^--", c="tab:green", label="acceptance")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("acceptance rate")
    ax.set_xlabel("kappa")
    ax.set_title("speed")
    ax.legend(fontsize=7, loc="upper left")
    ax2.legend(fontsize=7, loc="lower right")
    ax = axes[1]
    ax.plot([r["target_pass_cut"] for r in rows], [r["psnr_mean"] for r in rows], "o-")
    for r in rows:
        ax.annotate(f"k={r['kappa']:g}, FD x{r['fd_ratio']:.2f}", (r["target_pass_cut"], r["psnr_mean"]),
                    fontsize=7, textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("target-pass cut")
    ax.set_ylabel("image PSNR vs sequential (dB)")
    ax.set_title("speed vs deviation")
    ax = axes[2]
    for r in rows:
        ax.plot(r["rmse_by_position"], label=f"kappa={r['kappa']:g}")
    ax.set_xlabel("raster position")
    ax.set_ylabel("token RMSE vs sequential")
    ax.set_title("where deviation enters")
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="nextstep1_tiny_drift.digits")
    ap.add_argument("--kappas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0, 2.0])
    ap.add_argument("--tau0", type=float, default=0.0)
    ap.add_argument("--draft-len", type=int, default=4)
    ap.add_argument("--gammas", type=float, nargs="*", default=[],
                    help="also run the entropy early stop (gamma) at the last kappa")
    ap.add_argument("--num", type=int, default=359, help="images (default: the test split's size)")
    ap.add_argument("--seed", type=int, default=TUNING[0], help="a tuning seed (driftar_core.seeds.TUNING)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--markdown", dest="md_out")
    ap.add_argument("--plot", dest="plot_out")
    args = ap.parse_args(argv)
    check("tuning", [args.seed], TUNING)                  # a sweep never runs on evaluation or training seeds
    torch.set_num_threads(args.threads)
    report = sweep(args.model, args.kappas, args.tau0, args.draft_len, args.num, args.seed, args.gammas)
    md = to_markdown(report)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    if args.md_out:
        Path(args.md_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md_out).write_text(md)
    if args.plot_out:
        plot(report, args.plot_out)
    print(md)


if __name__ == "__main__":
    main()
