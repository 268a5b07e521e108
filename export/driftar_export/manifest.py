"""``manifest.json``: what an export bundle holds, written next to its graphs. Torch-free.

    {
      "format": "driftar-export/2",
      "model":   {"ref", "arch", "backbone", "weights_sha256", "token_shape", "image_shape", "class_num"},
      "sampler": {"kind": "plain" | "speculative", "num_iter", "cfg", "cfg_schedule", "temperature",
                  speculative only: "draft_len", "tau0", "kappa", "early_stop_gamma", "entropy_ema_init",
                  "entropy_ema_decay"},
      "samplers": {kind: settings} for every loop the graphs can run (``driftar run --sampler``),
      "graphs":  {role: {"file", "binds": the bundle method it computes ("backbone.step_net", ...),
                         "inputs": [{"name", "dtype", "shape"}], "outputs": [...], "alias_of" (aliases),
                         "dims": {name: {"min", "max", "example", "checks"}}, "parity": [...]}},
      "opset", "precision", "options", "versions": {torch, onnx, onnxruntime, onnxscript, ...},
      "parity":  {"atol", "max_abs_diff", "passed", "sampler": {"max_abs_pixel_diff", ...}},
      "tensorrt": (after --target tensorrt) {"stamp": {"tensorrt", "compute_capability", ...}, "engines"},
      "files":   {relpath: {"size", "sha256"}} of every file the bundle holds except manifest.json
    }

Every path a manifest names stays inside the bundle (``driftar_core.files.confined``), and every file
in ``files`` is checked against its size and sha256 before a graph is loaded (``read_manifest``). A
bundle exported before ``files`` existed loads with a one-line warning that it cannot be verified.

A shape entry is an int (static) or a dim name; output dims may be expressions of input dims
("past + elements"), as the exporter names them.
"""
from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from driftar_core.files import IntegrityError, check_digest, confined, file_record, verify_records, with_digest

FORMAT = "driftar-export/2"      # 2: graphs bind the bundle's methods; the runner runs the core's loop
MANIFEST = "manifest.json"
PACKAGES = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "numpy", "driftar", "driftar-export",
            "tensorrt")


KNOWN_FILES = ("config.json", "README.md", "card.json")   # what every bundle holds besides manifest + graphs
RUNTIME_CACHE = "ort_trt_cache"     # the TensorRT EP's engine cache, written into the bundle at run time


class BundleError(ValueError):
    """A directory that is not a (complete, compatible) export bundle."""


class BundleIntegrityError(BundleError, IntegrityError):
    """A bundle file that does not match its recorded hash, or a manifest path outside the bundle."""


def versions() -> dict[str, str | None]:
    """Installed versions of everything an export depends on (None = not installed), read without importing."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def has_draft(graphs: dict[str, Any]) -> bool:
    """Whether a bundle's graphs include its draft's (any method of ``draft``): it can run the speculative loop."""
    return any(str(g.get("binds", "")).startswith("draft.") for g in graphs.values())


def parse_manifest(directory: str | Path, any_version: bool = False) -> dict[str, Any]:
    """``manifest.json`` of a driftar export bundle (format checked), nothing else verified. ``any_version``:
    a bundle of an earlier format is accepted too (an export may replace it)."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(f"{directory} is not an export bundle: {MANIFEST} is missing "
                          "(make one with `driftar export --model MODEL --target onnx --out DIR`)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON ({e}); re-export the bundle") from None
    got = manifest.get("format") if isinstance(manifest, dict) else None
    if got != FORMAT and not (any_version and str(got).startswith(FORMAT.split("/")[0] + "/")):
        raise BundleError(f"{path} has format {got!r}, this driftar-export reads {FORMAT!r}; "
                          "re-export the bundle with this version")
    return manifest


def named_files(directory: str | Path, manifest: dict[str, Any]) -> list[str]:
    """Every relative path the manifest names (graphs, engines, their fp16 inputs, ``files``), each confined
    to ``directory``: an absolute path or one leading outside the bundle is a BundleIntegrityError."""
    directory = Path(directory)
    try:
        rels = [g["file"] for g in manifest["graphs"].values()]
        trt = manifest.get("tensorrt") or {}
        for e in (trt.get("engines") or {}).values():
            rels += [e["file"], *([e["onnx"]] if e.get("onnx") else [])]
        rels += list(manifest.get("files") or {})
    except (KeyError, TypeError, AttributeError) as e:
        raise BundleError(f"{directory / MANIFEST} is malformed ({type(e).__name__}: {e}); "
                          "re-export the bundle") from None
    for rel in rels:
        try:
            confined(directory, rel, f"{directory / MANIFEST}")
        except IntegrityError as e:
            raise BundleIntegrityError(str(e)) from None
    cache = trt.get("timing_cache")
    if isinstance(cache, str) and _inside(directory, cache):
        rels.append(_inside(directory, cache))
    return sorted(set(rels))


def _inside(directory: Path, path: str) -> str | None:
    """``path`` (as build_engines records the timing cache) relative to ``directory`` when it lies inside."""
    try:
        return Path(path).resolve().relative_to(directory.resolve()).as_posix()
    except ValueError:
        return None


def check_structure(directory: str | Path, manifest: dict[str, Any]) -> None:
    """The parts of the manifest the runtimes rely on are well formed: every graph's inputs and outputs are
    ``{"name", "dtype", "shape"}`` with int or named dims, every named input dim has int bounds."""
    where = Path(directory) / MANIFEST
    try:
        if int(manifest["options"]["max_batch"]) < 1:
            raise ValueError(f"options.max_batch is {manifest['options']['max_batch']}")
        model = manifest["model"]
        for key, rank in (("token_shape", 2), ("image_shape", 3)):
            shape = model[key]
            if not isinstance(shape, list) or len(shape) != rank or not all(isinstance(v, int) and v >= 1 for v in shape):
                raise ValueError(f"model.{key} is {shape!r}")
        if not isinstance(model["class_num"], int) or model["class_num"] < 1:
            raise ValueError(f"model.class_num is {model['class_num']!r}")
        for role, g in manifest["graphs"].items():
            if not isinstance(g["binds"], str) or not g["binds"]:
                raise ValueError(f"graph {role}: binds is {g['binds']!r}")
            dims = g["dims"]
            for name, d in dims.items():
                if not all(isinstance(d[k], int) for k in ("min", "max")) or not 0 <= d["min"] <= d["max"]:
                    raise ValueError(f"graph {role}: dim {name!r} has bounds {d.get('min')}..{d.get('max')}")
            for kind in ("inputs", "outputs"):
                for io in g[kind]:
                    if not isinstance(io["name"], str) or not isinstance(io["dtype"], str) \
                            or not isinstance(io["shape"], list) or not io["shape"]:
                        raise ValueError(f"graph {role}: {kind[:-1]} {io.get('name')!r} has shape {io.get('shape')!r}")
                    for e in io["shape"]:
                        if not (isinstance(e, int) and e >= 0 or isinstance(e, str)):
                            raise ValueError(f"graph {role}: {kind[:-1]} {io['name']!r} has dim {e!r}")
                        if kind == "inputs" and isinstance(e, str) and e not in dims:
                            raise ValueError(f"graph {role}: input {io['name']!r} names dim {e!r}, which has no bounds "
                                             "in its dims")
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        what = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        raise BundleError(f"{where} is malformed ({what}); it was edited or damaged: re-export the bundle") from None


def check_graph_io(directory: str | Path, role: str, graph: dict[str, Any], actual: Iterable[tuple[str, list]]) -> None:
    """The manifest's inputs of graph ``role`` are the graph file's: same names, ranks and static dims."""
    got = {name: list(shape) for name, shape in actual}
    want = {io["name"]: io["shape"] for io in graph["inputs"]}
    problems = [f"inputs {sorted(want)} vs the graph's {sorted(got)}"] if set(got) != set(want) else []
    for name in sorted(set(got) & set(want)):
        a, m = got[name], want[name]
        if len(a) != len(m) or any(type(x) is not type(y) or (isinstance(x, int) and x != y)
                                   for x, y in zip(a, m) if x is not None):
            problems.append(f"input {name!r} has shape {m} in the manifest but {a} in {graph['file']}")
    if problems:
        raise BundleError(f"{Path(directory) / MANIFEST} does not match graph {role}: {problems[0]}; the manifest was "
                          "edited or belongs to other graphs: re-export the bundle")


def read_manifest(directory: str | Path, verify: bool = True) -> dict[str, Any]:
    """Load and check ``manifest.json``: its structure, every path it names inside the bundle, every graph
    file present, and (``verify``) every file recorded in ``files`` against its size and sha256."""
    directory = Path(directory)
    manifest = parse_manifest(directory)
    named_files(directory, manifest)
    check_structure(directory, manifest)
    missing = [g["file"] for g in manifest["graphs"].values() if not (directory / g["file"]).is_file()]
    if missing:
        raise BundleError(f"{directory} is incomplete: graph files {missing} are missing; re-export the bundle")
    if not verify:
        return manifest
    if manifest.get("files") is None:
        print(f"warning: {directory} has no file hashes (exported by an older driftar-export); its graphs cannot be "
              "checked for damage: re-export it to add them", file=sys.stderr)
        return manifest
    try:
        verify_records(directory, manifest["files"], f"{directory / MANIFEST}")
        check_digest(manifest, f"{directory / MANIFEST}")
    except IntegrityError as e:
        raise BundleIntegrityError(f"{e}. Re-export the bundle (driftar export --model MODEL --target onnx "
                                   f"--out {directory})") from None
    if (manifest.get("parity") or {}).get("passed") is False:
        raise BundleError(f"{directory / MANIFEST} records failed parity checks; re-export the bundle")
    return manifest


def record_files(directory: str | Path, manifest: dict[str, Any], rels: Iterable[str]) -> dict[str, Any]:
    """Add ``{"size", "sha256"}`` of each ``rels`` (paths relative to ``directory``) to ``manifest["files"]``."""
    files = manifest.setdefault("files", {})
    for rel in sorted(rels):
        files[rel] = file_record(Path(directory) / rel)
    manifest["files"] = dict(sorted(files.items()))
    return manifest


def bundle_files(directory: str | Path, manifest: dict[str, Any]) -> set[str]:
    """The relative paths the bundle itself wrote: its ``files`` record, or, for a bundle without one, the
    known names and the files its manifest lists. Plus manifest.json."""
    rels = set(named_files(directory, manifest)) | {MANIFEST}
    if manifest.get("files") is None:
        rels |= set(KNOWN_FILES)
    return rels


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically with its own digest (an edit after export is refused on load)."""
    from driftar_core.files import atomic_write_text
    path = Path(directory) / MANIFEST
    atomic_write_text(path, json.dumps(with_digest(manifest), indent=2) + "\n")
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
