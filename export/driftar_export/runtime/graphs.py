"""Graph executors: ``run(role, feeds) -> outputs`` over a bundle's graphs, numpy in and out.

The ``Runner``'s bound graph methods only see this interface, so ONNX Runtime and TensorRT
(``driftar_export.tensorrt.runtime``) run the same loop. ONNX Runtime sessions take the providers in
priority order (TensorRT EP -> CUDA EP -> CPU EP; ORT >= 1.10 wants them explicit; CUDA is added
behind TensorRT, as the ONNX Runtime docs advise, so that nodes TensorRT does not take stay on the
GPU). ONNX Runtime falls back silently when a provider fails to load (missing CUDA / TensorRT
libraries): each session's ``get_providers()`` is compared with the request and a dropped GPU
provider is an error naming it. The TensorRT EP's optimisation profiles come from the manifest's dim
bounds; its engines and timing cache live under ``<bundle>/ort_trt_cache``, stamped with the
onnxruntime / TensorRT versions and the GPU, and cleared when any of them changes.

Inputs and outputs go through host memory on every call. On a GPU, IO binding
(``session.io_binding()``: keep the KV cache and z on the device between calls) is the next step;
docs/layout.md "Export".
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from driftar_export.manifest import MANIFEST, RUNTIME_CACHE, BundleError, check_graph_io, profile_shapes

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


class GraphSet(Protocol):
    roles: set[str]

    def run(self, role: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run graph ``role`` on named inputs; returns its outputs by name."""
        ...


def provider_names(providers: list[str] | tuple[str, ...]) -> list[str]:
    """Short names (tensorrt, cuda, cpu) or ORT names -> ORT names; unavailable ones fail clearly."""
    import onnxruntime as ort
    names = [PROVIDERS.get(p.lower(), p) for p in providers]
    available = ort.get_available_providers()
    trt_ep, cuda_ep = PROVIDERS["tensorrt"], PROVIDERS["cuda"]
    if trt_ep in names and cuda_ep not in names and cuda_ep in available:
        names.insert(names.index(trt_ep) + 1, cuda_ep)              # CUDA behind TensorRT (ORT's advice)
    missing = [n for n in names if n not in available]
    if missing:
        raise RuntimeError(f"onnxruntime {ort.__version__} has no {', '.join(missing)} (available: "
                           f"{', '.join(available)}). For the TensorRT / CUDA providers install onnxruntime-gpu "
                           "(and TensorRT 10 libraries for the TensorRT EP) instead of onnxruntime, or pass "
                           "--providers cpu.")
    return names


def tensorrt_ep_options(graph: dict[str, Any], cache_dir: Path, fp16: bool = False) -> dict[str, Any]:
    """TensorRT EP options of one graph: explicit profiles from the manifest bounds, engine + timing cache."""
    shapes = profile_shapes(graph)

    def fmt(i: int) -> str:
        return ",".join(f"{name}:{'x'.join(map(str, s[i]))}" for name, s in shapes.items())

    return {"trt_fp16_enable": fp16, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache_dir),
            "trt_profile_min_shapes": fmt(0), "trt_profile_opt_shapes": fmt(1), "trt_profile_max_shapes": fmt(2)}


def cache_stamp() -> dict[str, Any]:
    """What the TensorRT EP's cached engines are tied to: onnxruntime and TensorRT versions, the GPU."""
    import onnxruntime as ort

    from driftar_export.manifest import versions
    from driftar_export.options import ExportError
    from driftar_export.tensorrt.build import gpu_info              # what TensorRT engines are stamped with too
    try:
        gpu: dict[str, str] | None = gpu_info()
    except ExportError:                                           # no CUDA GPU visible: the stamp says so
        gpu = None
    return {"onnxruntime": ort.__version__, "tensorrt": versions().get("tensorrt"), "gpu": gpu}


def prepare_trt_cache(cache_dir: Path) -> None:
    """Clear the TensorRT EP's engine cache when it was made by another onnxruntime, TensorRT or GPU."""
    import json
    import shutil

    from driftar_core.files import atomic_write_text
    stamp, path = cache_stamp(), cache_dir / "stamp.json"
    try:
        same = json.loads(path.read_text()) == stamp
    except (OSError, ValueError):
        same = False
    if not same:
        shutil.rmtree(cache_dir, ignore_errors=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(stamp))


def session_options(threads: int | None) -> Any:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3                                    # errors only
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return so


class OrtGraphs:
    """One ONNX Runtime session per graph of a bundle (a file ORT cannot load, or one whose inputs are not
    the manifest's, is a BundleError naming it)."""

    def __init__(self, directory: str | Path, manifest: dict[str, Any], providers: tuple[str, ...] = ("cpu",),
                 threads: int | None = None, fp16: bool = False):
        import onnxruntime as ort

        from driftar_core.files import confined
        directory = Path(directory)
        names = provider_names(providers)
        if PROVIDERS["tensorrt"] in names:
            prepare_trt_cache(directory / RUNTIME_CACHE)
        self.sessions: dict[str, Any] = {}
        graphs = manifest["graphs"]
        for role, g in graphs.items():
            if g.get("alias_of"):
                continue                                         # served by its source's session (same file)
            opts = [tensorrt_ep_options(g, directory / "ort_trt_cache", fp16) if n == PROVIDERS["tensorrt"] else {}
                    for n in names]
            path = confined(directory, g["file"], str(directory / MANIFEST))
            try:
                self.sessions[role] = ort.InferenceSession(str(path), session_options(threads),
                                                           providers=names, provider_options=opts)
            except Exception as e:                             # ORT's own classes derive from Exception only
                why = " ".join(str(e).split())[:300]
                raise BundleError(f"ONNX Runtime cannot load graph {role} from {path} ({type(e).__name__}: {why}); "
                                  "the file is damaged or not this bundle's graph: re-export the bundle") from None
        for role, g in graphs.items():
            session = self.sessions[g.get("alias_of") or role]
            check_graph_io(directory, role, g, ((i.name, i.shape) for i in session.get_inputs()))
            dropped = [n for n in names if n != PROVIDERS["cpu"] and n not in session.get_providers()]
            if dropped:
                raise RuntimeError(f"ONNX Runtime could not use {', '.join(dropped)} for graph {role} (it fell back to "
                                   f"{', '.join(session.get_providers())}): the CUDA / TensorRT libraries did not load. "
                                   "Check the onnxruntime-gpu install (CUDA, cuDNN, TensorRT versions) or pass "
                                   "--providers cpu")
        self.providers = next(iter(self.sessions.values())).get_providers() if self.sessions else names
        self.sessions.update({role: self.sessions[g["alias_of"]] for role, g in graphs.items() if g.get("alias_of")})
        self.outputs = {r: [o.name for o in s.get_outputs()] for r, s in self.sessions.items()}
        self.roles = set(self.sessions)

    def run(self, role: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs[role], self.sessions[role].run(None, feeds)))


def ort_session(path: str | Path, threads: int | None = 1) -> Any:
    """A CPU session for one graph file (parity checks at export time)."""
    import onnxruntime as ort
    return ort.InferenceSession(str(path), session_options(threads), providers=[PROVIDERS["cpu"]])
