"""Check and time the TensorRT path on a GPU machine: what the CPU test suite cannot run.

Needs an NVIDIA GPU, ``tensorrt`` 10.x or 11.x, and (for the ONNX Runtime GPU rows) ``onnxruntime-gpu``
instead of ``onnxruntime``:

    pip install -r requirements.txt
    pip install tensorrt                                   # NVIDIA's wheel for your CUDA (10.x or 11.x)
    pip uninstall -y onnxruntime && pip install onnxruntime-gpu   # optional: CUDA / TensorRT EP rows
    python benchmarks/check_tensorrt.py --model mar_tiny_drift.digits --out bench-out/trt/mar --fp16 \
        --json benchmarks/results/tensorrt_mar.json
    python benchmarks/check_tensorrt.py --model nextstep1_tiny_drift.digits --out bench-out/trt/nextstep1
    python -m pytest tests/export -m gpu -rs               # the suite's real-engine test

What it does, in order (each step prints one line; the JSON has everything):

1. the machine: TensorRT version, GPU and compute capability, ONNX Runtime providers;
2. ``driftar export --target onnx`` (the exporter's own parity checks at two shapes, on CPU);
3. engines with ``build_engines`` (fp32: TF32 off; ``--fp16``: a second bundle, TensorRT 10 FP16 flag
   with fp32 norms / TensorRT 11 strongly typed), build time per precision;
4. per-graph parity: an ONNX Runtime (CPU) sampler run is recorded call by call and every recorded
   call is replayed through the engines (real inputs, batch 1 and max_batch): max |diff| per output;
5. end to end for one seed: TensorRT runner vs ONNX Runtime vs eager PyTorch on CUDA, max |pixel diff|;
6. the engine stamp: a copy of the bundle stamped for another compute capability must be refused
   with a "rebuild" message;
7. latency per image at batch 1 and batch 16 (median of --repeats after a warm-up): eager PyTorch
   (CUDA), ONNX Runtime CUDA EP and TensorRT EP when installed, the TensorRT runner; ratios vs eager.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


class Recording:
    """A GraphSet wrapper that keeps every call's feeds and outputs (for replay through the engines)."""

    def __init__(self, graphs: Any):
        self.graphs, self.roles, self.calls = graphs, graphs.roles, []

    def run(self, role: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.graphs.run(role, feeds)
        self.calls.append((role, {k: np.array(v) for k, v in feeds.items()}, out))
        return out


def machine() -> dict[str, Any]:
    import onnxruntime as ort

    from driftar_export.tensorrt.build import gpu_info, require_tensorrt
    trt = require_tensorrt()
    return {"tensorrt": trt.__version__, **gpu_info(), "onnxruntime": ort.__version__,
            "ort_providers": ort.get_available_providers(), "torch": torch.__version__}


def graph_parity(bundle: Path, trt_runner: Any, batches: list[int], seed: int) -> dict[str, dict[str, float]]:
    """Record ORT (CPU) sampler runs, replay each call through TensorRT: worst |diff| per role and output."""
    from driftar_export.runtime.runner import Runner
    ort_runner = Runner(bundle, threads=1)
    rec = Recording(ort_runner.graphs)
    ort_runner.graphs = rec
    for b in batches:
        ort_runner.sample(torch.arange(b) % 10, generator=torch.Generator().manual_seed(seed))
    worst: dict[str, dict[str, float]] = {}
    for role, feeds, ref in rec.calls:
        got = trt_runner.graphs.run(role, feeds)
        for name, r in ref.items():
            d = float(np.abs(got[name].astype(np.float64) - r).max()) if r.size else 0.0
            worst.setdefault(role, {})[name] = max(worst.get(role, {}).get(name, 0.0), d)
    return worst


def end_to_end(bundle: Path, trt_runner: Any, model: Any, batch: int, seed: int) -> dict[str, float]:
    from driftar_export.sampler import torch_sampler
    from driftar_export.runtime.runner import Runner
    labels = torch.arange(batch) % 10
    ort = Runner(bundle, threads=1).sample(labels, generator=torch.Generator().manual_seed(seed)).images
    trt = trt_runner.sample(labels, generator=torch.Generator().manual_seed(seed)).images
    with torch.inference_mode():
        eager = torch_sampler(trt_runner.settings)(model, labels.cuda(), generator=torch.Generator().manual_seed(seed))
    eager = eager.images.float().cpu()
    return {"trt_vs_ort": float((trt - ort).abs().max()), "trt_vs_pytorch_cuda": float((trt - eager).abs().max()),
            "ort_vs_pytorch_cuda": float((ort - eager).abs().max())}


def stamp_refused(bundle: Path, tmp: Path) -> str:
    from driftar_export.manifest import read_manifest, write_manifest
    from driftar_export.runtime.runner import Runner
    copy = shutil.copytree(bundle, tmp, dirs_exist_ok=True)
    manifest = read_manifest(copy)
    manifest["tensorrt"]["stamp"]["compute_capability"] = "0.0"
    write_manifest(copy, manifest)
    try:
        Runner(copy, backend="tensorrt")
    except ValueError as e:
        assert "Rebuild" in str(e), e
        return str(e)
    raise AssertionError("a mismatched engine stamp was not refused")


def latency(sample: Any, batch: int, repeats: int, cuda_sync: bool) -> float:
    """Median seconds per image of ``sample(labels, generator)`` after one warm-up call."""
    times = []
    for r in range(repeats + 1):
        labels = torch.arange(batch) % 10
        g = torch.Generator().manual_seed(r)
        if cuda_sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        sample(labels, g)
        if cuda_sync:
            torch.cuda.synchronize()
        if r:
            times.append((time.perf_counter() - t0) / batch)
    return statistics.median(times)


def timings(bundle: Path, trt_runner: Any, model: Any, repeats: int, ort_providers: list[str]) -> dict[str, Any]:
    from driftar_export.sampler import torch_sampler
    from driftar_export.runtime.runner import Runner
    eager = torch_sampler(trt_runner.settings)
    rows: dict[str, Any] = {}
    candidates = {"pytorch eager (cuda)": (lambda y, g: eager(model, y.cuda(), generator=g), True),
                  "tensorrt runner": (lambda y, g: trt_runner.sample(y, generator=g), True)}
    for short, ort_name in (("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")):
        if ort_name in ort_providers:
            r = Runner(bundle, providers=(short, "cpu"))
            candidates[f"onnxruntime {short} EP"] = (lambda y, g, r=r: r.sample(y, generator=g), True)
        else:
            rows[f"onnxruntime {short} EP"] = f"skipped: {ort_name} not in this onnxruntime (install onnxruntime-gpu)"
    with torch.inference_mode():
        for name, (fn, sync) in candidates.items():
            rows[name] = {f"ms_per_img_b{b}": 1e3 * latency(fn, b, repeats, sync) for b in (1, 16)}
    ref = rows["pytorch eager (cuda)"]
    for row in rows.values():
        if isinstance(row, dict):
            row.update({f"speedup_b{b}": ref[f"ms_per_img_b{b}"] / row[f"ms_per_img_b{b}"] for b in (1, 16)})
    return rows


def main() -> None:
    from driftar_core.resolve import load_model
    from driftar_export.exporter import export_onnx
    from driftar_export.options import OnnxOptions, TensorRTOptions
    from driftar_export.runtime.runner import Runner
    from driftar_export.tensorrt.build import build_engines

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mar_tiny_drift.digits", help="model name or path (a Drift-AR bundle)")
    ap.add_argument("--out", default="bench-out/trt/bundle", help="export bundle directory (fp16: <out>-fp16)")
    ap.add_argument("--bundle", default=None, help="use this ONNX bundle (e.g. copied from a CPU machine) instead "
                    "of exporting; its manifest names the model for the PyTorch comparison")
    ap.add_argument("--fp16", action="store_true", help="also build and check fp16 engines")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the full report here")
    args = ap.parse_args()

    report: dict[str, Any] = {"machine": machine(), "model": args.model}
    print("machine:", report["machine"])
    if args.bundle:
        from driftar_export.manifest import read_manifest
        out = Path(args.bundle)
        manifest = read_manifest(out)
        report["model"] = manifest["model"]["ref"]
        if not report["model"]:
            raise SystemExit(f"{out} does not record the model it came from; pass --model instead of --bundle")
        model = load_model(report["model"])
    else:
        model, out = load_model(args.model), Path(args.out)
        t0 = time.perf_counter()
        manifest = export_onnx(model, out, OnnxOptions(max_batch=16), ref=args.model, log=lambda s: None)
        report["onnx_export_seconds"] = time.perf_counter() - t0
    report["onnx_parity"] = manifest["parity"]
    print(f"onnx bundle {out}: worst graph |diff| vs PyTorch {max(manifest['parity']['max_abs_diff'].values()):.2e}")
    model = model.cuda()
    for precision in ["fp32"] + (["fp16"] if args.fp16 else []):
        bundle = out if precision == "fp32" else shutil.copytree(out, out.with_name(out.name + "-fp16"),
                                                                  dirs_exist_ok=True)
        t0 = time.perf_counter()
        build_engines(bundle, TensorRTOptions(precision=precision), log=lambda s: None)
        row: dict[str, Any] = {"build_seconds": time.perf_counter() - t0}
        trt_runner = Runner(bundle, backend="tensorrt")
        row["graph_parity_vs_ort"] = graph_parity(bundle, trt_runner, [1, 16], args.seed)
        row["end_to_end_max_abs_pixel_diff"] = end_to_end(bundle, trt_runner, model, 4, args.seed)
        row["stamp_refusal"] = stamp_refused(bundle, out.with_name(out.name + f"-stamp-{precision}"))
        row["latency"] = timings(bundle, trt_runner, model, args.repeats, report["machine"]["ort_providers"])
        report[precision] = row
        worst = max(max(v.values()) for v in row["graph_parity_vs_ort"].values())
        print(f"{precision}: engines in {row['build_seconds']:.1f} s; graph parity vs ORT {worst:.2e}; "
              f"end to end {row['end_to_end_max_abs_pixel_diff']}; latency {json.dumps(row['latency'])}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
        print("wrote", args.json)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
