"""``driftar bench``: models side by side in one process, reported as ratios against the first.

Latency is measured per image at batch 1 and batch 16, alternating between models on every repeat
(so slow drift of the machine hits all models alike), after warm-up, as the median with the
interquartile spread. Before the first timed repeat the models also sample, untimed, until
``burn_in_s`` seconds have passed: the reference VMs run the first ~2-3 s of work after an idle
spell at about half speed (measured: 64 cached NextStep-1 steps took 2.5 ms each in the first three
runs of a process, then 1.4 ms; after a 3 s burn-in every run took 1.2-1.3 ms), which a count of
warm-up repeats does not cover when the fastest model needs ~0.1 s per sample. The AR stage
(target/draft forwards) and the decoder stage (head) are timed separately inside the same sampling calls, so the AR-stage and decoder-stage speedups are measured,
not inferred. Repeat r decodes class labels (r + arange(batch)) % 10 with seed + r, so batch-1
repeats cover different digits; pass counts and acceptance are the mean over the timed repeats at
the first batch size. Quality comes from driftar_core.eval (FD next to its real-vs-real floor).

A model that decodes speculatively by default is always timed next to the same model decoded
sequentially (``NAME@plain`` is added when the list lacks it): its AR-stage speedup is reported
against that (``ar_stage_speedup_vs_plain``: same weights, same number of tokens) and, separately,
against the first model (``ar_stage_speedup``). Stage speedups are not multiplied: the stages' times
add. A speculative model's quality is measured on its own speculative samples (sampled at the first
batch size, where its default sampler speculates), never on the sequential decoder's.
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

RESULT_KEYS = ("model", "latency_ms_b1", "latency_ms_b16", "nfe", "backbone_passes", "head_nfe", "draft_passes",
               "acceptance_rate", "mean_accepted_len", "fd", "fd_floor", "class_accuracy", "precision", "recall")


@dataclass
class _Timing:
    total: list[float] = field(default_factory=list)     # seconds per image
    ar: list[float] = field(default_factory=list)
    dec: list[float] = field(default_factory=list)


def _quantiles(xs: list[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def _time_once(bundle: Any, batch: int, seed: int, sampler: Any) -> tuple[float, float, float, Any]:
    labels = (torch.arange(batch) + seed) % 10         # repeats rotate the classes (batch 1 is not one digit)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    out = sampler(bundle, labels.to(bundle.device), generator=g)
    dt = time.perf_counter() - t0
    ex = out.counts.extra
    return dt / batch, ex.get("backbone_s", 0.0) / batch + ex.get("draft_s", 0.0) / batch, ex.get("head_s", 0.0) / batch, out.counts


def mean_counts(counts: list[Any]) -> dict[str, Any]:
    """Pass counts and acceptance of the timed repeats at the first batch size, averaged (each repeat
    decodes other classes and noise, and a speculative decoder's passes differ between them)."""
    def mean(values: list[Any]) -> Any:
        values = [v for v in values if v is not None]
        if not values:
            return None
        avg = sum(values) / len(values)
        return int(avg) if all(v == values[0] for v in values) and isinstance(values[0], int) else avg
    out = {k: mean([getattr(c, k) for c in counts]) for k in ("nfe", "backbone_passes", "head_nfe", "draft_passes")}
    out.update({k: mean([c.extra.get(k) for c in counts]) for k in ("acceptance_rate", "mean_accepted_len")})
    return out


def plain_name(model: str) -> str:
    return f"{split_model_spec(model)[0]}@plain"


def plain_twins(models: list[str], specs: dict[str, tuple[str, bool | None]], loaded: dict[str, Any]) -> list[str]:
    """``NAME@plain`` for every model that decodes speculatively by default and whose sequential decoding
    the list does not time already (eager bundles only: an exporter's runner samples with its own settings)."""
    from driftar_core.bundle import ModelBundle
    out = []
    for m, (name, flag) in specs.items():
        bundle = loaded[name]
        speculative = flag is True or (flag is None and isinstance(bundle, ModelBundle)
                                        and bundle.sampler.kind == "speculative")
        twin = plain_name(m)
        if speculative and isinstance(bundle, ModelBundle) and twin not in models and twin not in out:
            out.append(twin)
    return out


def default_sampler(bundle: Any) -> Any:
    """The sampler a model uses by default: speculative when it has a draft and says so."""
    from driftar_core.speculative import select_sampler
    return select_sampler(bundle)


SAMPLER_SUFFIXES = {"plain": False, "speculative": True}


def split_model_spec(spec: str) -> tuple[str, bool | None]:
    """``NAME[@plain|@speculative]`` -> (NAME, speculative flag or None = the model's default sampler)."""
    name, sep, mode = spec.rpartition("@")
    if not sep or mode not in SAMPLER_SUFFIXES:
        return spec, None
    return name, SAMPLER_SUFFIXES[mode]


def load_bench_model(ref: str) -> Any:
    """A model name or path (eager PyTorch), or ``<exporter>:<bundle dir>`` (e.g. ``onnx:bundles/mar``): the
    runner of an exporter plugin that has ``load_runner``, so exported runtimes sit in the same table."""
    scheme, sep, rest = ref.partition(":")
    if sep and rest:
        from driftar_core.plugins import registries
        exporters = registries().exporters
        if scheme in exporters.names():
            # the same thread budget as eager PyTorch; an exporter without a runner raises ValueError
            return exporters.get(scheme)().load_runner(rest, threads=torch.get_num_threads())
    from driftar_core.resolve import load_model
    return load_model(ref)


def run_bench(models: list[str], *, batch_sizes: tuple[int, ...] = (1, 16), repeats: int = 5, warmup: int = 1,
              eval_samples: int | None = None, eval_seeds: tuple[int, ...] | None = None, seed: int = 0,
              quality: bool = True, progress: bool | None = None, burn_in_s: float = 0.0) -> dict[str, Any]:
    """Benchmark ``models`` (names, paths or ``onnx:DIR`` exported bundles); the first is the reference of every ratio.

    burn_in_s: before the first timed repeat, keep running untimed warm-up rounds (every model, the
    first batch size) until this many seconds have passed (the CLI's default is 3 s; see the module docstring)."""
    from tqdm.auto import tqdm

    from driftar_core.seeds import EVAL, EVAL_SEEDS, check
    from driftar_core.speculative import select_sampler
    eval_seeds = EVAL_SEEDS if eval_seeds is None else tuple(eval_seeds)
    check("evaluation", eval_seeds, EVAL)
    specs = {m: split_model_spec(m) for m in models}                  # "name@plain": same weights, plain decoding
    loaded = {name: load_bench_model(name) for name, _ in specs.values()}
    added = plain_twins(models, specs, loaded)                         # each speculative model's sequential reference
    models = [*models, *added]
    specs.update({m: split_model_spec(m) for m in added})
    bundles = {m: loaded[name] for m, (name, _) in specs.items()}
    samplers = {m: select_sampler(bundles[m], flag) for m, (_, flag) in specs.items()}
    timings = {(m, b): _Timing() for m in models for b in batch_sizes}
    counts: dict[str, Any] = {}
    total = len(batch_sizes) * (warmup + repeats) * len(models)
    bar = tqdm(total=total, desc="bench latency", disable=progress is False or None)
    with torch.inference_mode():
        t_end, b0 = time.perf_counter() + burn_in_s, batch_sizes[0]
        while time.perf_counter() < t_end:                               # untimed: the machine up to speed
            for m in models:
                _time_once(bundles[m], b0, seed, samplers[m])
        for b in batch_sizes:
            for r in range(warmup + repeats):
                for m in models:  # alternate models within every repeat
                    per_img, ar, dec, c = _time_once(bundles[m], b, seed + r, samplers[m])
                    bar.update(1)
                    if r < warmup:
                        continue
                    t = timings[(m, b)]
                    t.total.append(per_img), t.ar.append(ar), t.dec.append(dec)
                    if b == b0:
                        counts.setdefault(m, []).append(c)
    bar.close()

    results, stage = [], {}
    for m in models:
        row: dict[str, Any] = {k: None for k in RESULT_KEYS}
        row.update(model=m, **mean_counts(counts[m]))
        row["speculative"] = bool(row["draft_passes"])                    # drafted at the first batch size
        row["added"] = m in added
        for b in batch_sizes:
            t = timings[(m, b)]
            q1, med, q3 = _quantiles(t.total)
            row[f"latency_ms_b{b}"] = 1e3 * med
            row[f"latency_iqr_ms_b{b}"] = [1e3 * q1, 1e3 * q3]
            row[f"ar_ms_b{b}"] = 1e3 * statistics.median(t.ar)
            row[f"decoder_ms_b{b}"] = 1e3 * statistics.median(t.dec)
        if quality:
            from driftar_core.eval.evaluate import evaluate
            eval_batch = b0 if row["speculative"] else 128                  # its own (speculative) samples
            q = evaluate(bundles[m], num_samples=eval_samples, seeds=eval_seeds, sampler=samplers[m],
                         batch_size=eval_batch)
            row["eval_batch"] = eval_batch
            row.update({k: q.get(k) for k in ("fd", "fd_floor", "class_accuracy", "precision", "recall")})
            row["fd_std"] = q.get("fd_std")
        results.append(row)
        stage[m] = row

    ref = results[0]
    ratios = {}
    b0 = batch_sizes[0]
    for row in results:
        r = {f"speedup_b{b}": ref[f"latency_ms_b{b}"] / row[f"latency_ms_b{b}"] for b in batch_sizes}
        r["ar_stage_speedup"] = ref[f"ar_ms_b{b0}"] / max(row[f"ar_ms_b{b0}"], 1e-12)   # vs the first model
        r["decoder_speedup"] = ref[f"decoder_ms_b{b0}"] / max(row[f"decoder_ms_b{b0}"], 1e-12)
        plain = stage.get(plain_name(row["model"])) if row["speculative"] else None
        r["ar_stage_speedup_vs_plain"] = (plain[f"ar_ms_b{b0}"] / max(row[f"ar_ms_b{b0}"], 1e-12)
                                          if plain is not None else None)   # same model, decoded sequentially
        r["fd_ratio"] = (row["fd"] / ref["fd"]) if quality and ref["fd"] else None
        ratios[row["model"]] = r
    return {"machine": machine_info(), "settings": {"batch_sizes": list(batch_sizes), "repeats": repeats,
            "warmup": warmup, "burn_in_s": burn_in_s, "eval_seeds": list(eval_seeds), "eval_samples": eval_samples},
            "results": results, "ratios": ratios}


def machine_info() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def burn_in_note(settings: dict[str, Any]) -> str:
    burn = settings.get("burn_in_s") or 0.0
    return f" and a {burn:g} s burn-in" if burn else ""


def _fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}" if abs(x) < 1e4 else f"{x:.3g}"
    return str(x)


def to_markdown(report: dict[str, Any]) -> str:
    bs = report["settings"]["batch_sizes"]
    head = (["model"] + [f"ms/img b{b}" for b in bs] + ["NFE", "target passes", "head NFE", "draft passes",
            "accept", "mean acc. len", "FD", "FD floor", "class acc.", "precision", "recall"]
            + [f"speedup b{b}" for b in bs] + ["AR-stage vs first", "AR-stage vs own plain", "decoder speedup",
                                               "FD ratio"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["results"]:
        r = report["ratios"][row["model"]]
        name = f"`{row['model']}`" + (" (added: the sequential reference)" if row.get("added") else "")
        cells = ([name] + [_fmt(row[f"latency_ms_b{b}"], 1) for b in bs]
                 + [_fmt(row[k]) for k in ("nfe", "backbone_passes", "head_nfe", "draft_passes")]
                 + [_fmt(row["acceptance_rate"]), _fmt(row["mean_accepted_len"])]
                 + [_fmt(row[k], 3) for k in ("fd", "fd_floor", "class_accuracy", "precision", "recall")]
                 + [_fmt(r[f"speedup_b{b}"]) + "x" for b in bs]
                 + [_fmt(r["ar_stage_speedup"]) + "x",
                    _fmt(r["ar_stage_speedup_vs_plain"]) + ("x" if r["ar_stage_speedup_vs_plain"] else ""),
                    _fmt(r["decoder_speedup"]) + "x", _fmt(r["fd_ratio"])])
        lines.append("| " + " | ".join(cells) + " |")
    m = report["machine"]
    lines.append("")
    lines.append(f"Machine: {m['processor']}, {m['threads']} torch threads, torch {m['torch']}, "
                 f"{m['cuda'] or 'CPU only'}. Latency: median per image over {report['settings']['repeats']} "
                 f"alternating repeats after {report['settings']['warmup']} warm-up"
                 f"{burn_in_note(report['settings'])}; ratios against `{report['results'][0]['model']}`.")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: str | Path) -> None:
    """Speed against quality: per-image latency (batch 1, log scale) vs FD, with the real-vs-real floor."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for row in report["results"]:
        ax.errorbar(row["latency_ms_b1"], row["fd"] if row["fd"] is not None else 0, yerr=row.get("fd_std"),
                    fmt="o", ms=6, capsize=3, label=row["model"])     # FD spread over sampling seeds
    floors = [r["fd_floor"] for r in report["results"] if r["fd_floor"] is not None]
    if floors:
        ax.axhline(statistics.mean(floors), ls="--", c="gray", lw=1, label="real-vs-real floor")
    ax.legend(fontsize=8)                                             # names in the legend: labels next to close points overlap
    ax.set_xscale("log")
    ax.set_xlabel("latency per image, batch 1 (ms, log)")
    ax.set_ylabel("FD (evaluator features, lower is better)")
    ax.set_title("driftar bench: speed vs quality")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(report: dict[str, Any], json_path: str | None, md_path: str | None, plot_path: str | None) -> None:
    from driftar_core.bundle import atomic_write_text
    for p in (json_path, md_path, plot_path):
        if p:
            Path(p).parent.mkdir(parents=True, exist_ok=True)
    if json_path:
        atomic_write_text(Path(json_path), json.dumps(report, indent=2))
    if md_path:
        atomic_write_text(Path(md_path), to_markdown(report))
    if plot_path:
        plot(report, plot_path)
