"""``manifest.json``: what an export bundle holds, written next to its graphs. Torch-free.

    {
      "format": "driftar-export/1",
      "model":   {"ref", "arch", "backbone", "kind": "masked" | "causal", "token_shape", "image_shape", ...},
      "sampler": {"kind": "plain" | "speculative", "num_iter", "cfg", "cfg_schedule", "temperature",
                  speculative only: "draft_len", "tau0", "kappa", "early_stop_gamma", "entropy_ema_init",
                  "entropy_ema_decay"},
      "samplers": {kind: settings} for every loop the graphs can run (``driftar run --sampler``),
      "causal":  (causal backbones) {"prompts": class / negative prefix ids, "target"/"draft": cache layout},
      "graphs":  {role: {"file", "inputs": [{"name", "dtype", "shape"}], "outputs": [...],
                         "dims": {name: {"min", "max", "example", "checks"}}, "parity": [...]}},
      "opset", "precision", "options", "versions": {torch, onnx, onnxruntime, onnxscript, ...},
      "parity":  {"atol", "max_abs_diff", "passed", "sampler": {"max_abs_pixel_diff", ...}},
      "tensorrt": (after --target tensorrt) {"stamp": {"tensorrt", "compute_capability", ...}, "engines"}
    }

A shape entry is an int (static) or a dim name; output dims may be expressions of input dims
("past + elements"), as the exporter names them.
"""
from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

FORMAT = "driftar-export/1"
MANIFEST = "manifest.json"
DRAFT_ROLES = frozenset({"draft_step", "draft_window"})   # a bundle with either can run the speculative loop
PACKAGES = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "numpy", "driftar", "driftar-export",
            "tensorrt")


class BundleError(ValueError):
    """A directory that is not a (complete, compatible) export bundle."""


def versions() -> dict[str, str | None]:
    """Installed versions of everything an export depends on (None = not installed), read without importing."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Load and sanity-check ``manifest.json``; every graph file it names must exist."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(f"{directory} is not an export bundle: {MANIFEST} is missing "
                          "(make one with `driftar export --model MODEL --target onnx --out DIR`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{path} is not valid JSON ({e}); re-export the bundle") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path} has format {manifest.get('format')!r}, this driftar-export reads {FORMAT!r}; "
                          "re-export the bundle with this version")
    missing = [g["file"] for g in manifest["graphs"].values() if not (directory / g["file"]).is_file()]
    if missing:
        raise BundleError(f"{directory} is incomplete: graph files {missing} are missing; re-export the bundle")
    return manifest


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> Path:
    from driftar_core.bundle import atomic_write_text
    path = Path(directory) / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    return path


def dim_value(entry: int | str, dims: dict[str, dict[str, Any]], which: str) -> int:
    """A shape entry at ``which`` in {"min", "example", "max"}."""
    return entry if isinstance(entry, int) else int(dims[entry][which])


def profile_shapes(graph: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Per input: (min, opt, max) shapes of a TensorRT optimisation profile (opt = the export example)."""
    dims = graph["dims"]
    return {io["name"]: tuple(tuple(dim_value(e, dims, w) for e in io["shape"]) for w in ("min", "example", "max"))
            for io in graph["inputs"]}


def summary(manifest: dict[str, Any]) -> str:
    """A few lines for the command line: graphs, bounds, parity."""
    lines = [f"bundle of {manifest['model']['ref']} ({manifest['model']['backbone']}, {manifest['sampler']['kind']} "
             f"sampler), opset {manifest['opset']}, {manifest['precision']}"]
    for role, g in manifest["graphs"].items():
        worst = max((max(p["max_abs_diff"].values()) for p in g.get("parity", [])), default=None)
        bounds = ", ".join(f"{n} {d['min']}..{d['max']}" for n, d in g["dims"].items())
        lines.append(f"  {role:14s} {bounds:45s} parity max |diff| {worst:.2e}" if worst is not None
                     else f"  {role:14s} {bounds}")
    s = manifest.get("parity", {}).get("sampler")
    if s:
        lines.append(f"  sampler: ORT vs PyTorch max |pixel diff| {s['max_abs_pixel_diff']:.2e}, "
                     f"max |token diff| {s['max_abs_token_diff']:.2e} (batch {s['batch']}, seed {s['seed']})")
    return "\n".join(lines)
