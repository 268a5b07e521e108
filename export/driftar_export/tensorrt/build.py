"""TensorRT engines from an export bundle's ONNX graphs, with the TensorRT Python API (10.x and 11.x).

Per graph (NVIDIA's documented build flow; docs/layout.md "Export"):

    builder = trt.Builder(logger); network = builder.create_network(flags)
    trt.OnnxParser(network, logger).parse_from_file(onnx)        # errors listed, not swallowed
    config.set_memory_pool_limit(WORKSPACE, ...); profile.set_shape(input, min, opt, max)  # manifest bounds
    config.set_timing_cache(...)                                  # shared by all graphs, saved after
    builder.build_serialized_network(network, config)            # -> engines/<role>.engine

Precision:
- fp32: TF32 is cleared (TensorRT enables it by default on Ampere+; it would break the 1e-4 parity).
- fp16 (TensorRT 10 and 11 alike): the network is created STRONGLY_TYPED from an fp16 copy of the graph
  (``fp16.py``: MatMul/Gemm in fp16, normalisation, softmax and reductions in fp32), so precision comes
  from the ONNX types. Weak typing with the FP16 flag is deprecated since 10.12 and gone in 11, and
  pinning layer types to fp32 would also pin the integer and shape layers the parser emits for the
  int64 / bool inputs.

Every call whose result says it failed is checked: the parser's errors are listed,
``add_optimization_profile`` (a bad profile: -1), ``set_timing_cache`` (a cache from another GPU or
TensorRT version is not accepted: the build goes on with a fresh one, said in the log).

Engines are not portable across TensorRT versions or GPUs (TensorRT #2072, #564, onnxruntime #22139):
the manifest's ``tensorrt.stamp`` records both, and ``runtime.py`` refuses a mismatch with a
"rebuild" message instead of failing inside deserialisation.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from driftar_export.manifest import profile_shapes
from driftar_export.options import ExportError, TensorRTOptions

INSTALL_HINT = ("--target tensorrt needs the `tensorrt` Python package (TensorRT 10 or 11: pip install tensorrt, "
                "or NVIDIA's wheels for your CUDA) and an NVIDIA GPU with a CUDA driver. Export to ONNX here with "
                "--target onnx, then build and check the engines on a GPU machine: "
                "python benchmarks/check_tensorrt.py --bundle DIR")


def require_tensorrt() -> Any:
    """Import tensorrt (10 or 11) or fail with what to install."""
    try:
        import tensorrt as trt
    except ImportError:
        raise ExportError(f"tensorrt is not installed. {INSTALL_HINT}") from None
    if trt_major(trt) < 10:
        raise ExportError(f"TensorRT {trt.__version__} is too old: driftar-export supports 10.x and 11.x. {INSTALL_HINT}")
    return trt


def trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def gpu_info() -> dict[str, str]:
    """The CUDA device engines are built for (through torch, which every driftar install has)."""
    import torch
    if not torch.cuda.is_available():
        raise ExportError(f"no CUDA GPU is visible (torch.cuda.is_available() is False). {INSTALL_HINT}")
    major, minor = torch.cuda.get_device_capability(0)
    return {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}


def preflight() -> tuple[Any, dict[str, str]]:
    """Fail fast, before any model is loaded: tensorrt importable and a GPU present."""
    missing = []
    try:
        trt = require_tensorrt()
    except ExportError:
        trt, missing = None, ["the tensorrt package"]
    try:
        gpu = gpu_info()
    except ExportError:
        gpu, missing = {}, [*missing, "a CUDA GPU"]
    if missing:
        raise ExportError(f"cannot build TensorRT engines here: missing {' and '.join(missing)}. {INSTALL_HINT}")
    return trt, gpu


def engine_stamp(trt: Any, gpu: dict[str, str], options: TensorRTOptions, strongly_typed: bool) -> dict[str, Any]:
    return {"tensorrt": str(trt.__version__), **gpu, "precision": options.precision, "strongly_typed": strongly_typed}


def stamp_mismatch(stamp: dict[str, Any], trt_version: str, compute_capability: str) -> str | None:
    """Why an engine built under ``stamp`` cannot run here (None = it can)."""
    problems = []
    if stamp.get("tensorrt") != trt_version:
        problems.append(f"TensorRT {stamp.get('tensorrt')} (this machine: {trt_version})")
    if stamp.get("compute_capability") != compute_capability:
        problems.append(f"compute capability {stamp.get('compute_capability')} (this GPU: {compute_capability})")
    if not problems:
        return None
    return (f"the engines were built for {' and '.join(problems)}; TensorRT engines are tied to both. "
            "Rebuild them here: driftar export --model MODEL --target tensorrt --out BUNDLE "
            "(or python benchmarks/check_tensorrt.py --bundle BUNDLE)")


def build_engine(trt: Any, onnx_path: Path, graph: dict[str, Any], options: TensorRTOptions, strongly_typed: bool,
                 timing_cache: bytes, logger: Any) -> tuple[bytes, bytes]:
    """One ONNX graph -> (serialized engine, updated timing cache)."""
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {'; '.join(errors)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * 2**30))
    config.builder_optimization_level = options.builder_optimization_level
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)                       # fp32 means fp32 (parity 1e-4)
    profile = builder.create_optimization_profile()
    shapes = profile_shapes(graph)
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    if config.add_optimization_profile(profile) < 0:
        raise ExportError(f"TensorRT refused the optimisation profile of {onnx_path.name} ({shapes}); the manifest's "
                          "dim bounds do not fit the graph's inputs: re-export the bundle")
    cache = config.create_timing_cache(timing_cache)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        logger.log(trt.Logger.WARNING, f"the timing cache does not fit this GPU / TensorRT; {onnx_path.name} is "
                   "timed afresh")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build an engine for {onnx_path.name} (see the log above)")
    return bytes(serialized), bytes(config.get_timing_cache().serialize())


def build_engines(directory: str | Path, options: TensorRTOptions | None = None, log: Callable[[str], None] = print,
                  trt: Any = None, gpu: dict[str, str] | None = None) -> dict[str, Any]:
    """Build every graph of the bundle at ``directory`` into ``engines/``; records the stamp in the manifest
    and the engines' (and timing cache's, when inside the bundle) sizes and hashes in its ``files``.
    Refused for a bundle holding files it did not write (driftar_export.destination)."""
    from driftar_export.destination import check_out_dir
    from driftar_export.manifest import read_manifest
    options = options or TensorRTOptions()
    if trt is None or gpu is None:
        trt, gpu = preflight()
    directory = Path(directory)
    manifest = read_manifest(directory)                               # hashes verified before any graph is parsed
    check_out_dir(directory, option="bundle")
    strongly_typed = trt_major(trt) >= 11 or options.precision == "fp16"
    engines_dir = directory / "engines"
    created = not engines_dir.exists()
    engines_dir.mkdir(exist_ok=True)
    try:
        return _build_all(trt, gpu, directory, manifest, options, strongly_typed, engines_dir, log)
    except BaseException:
        if created:                                                   # a failed first build leaves no foreign files
            shutil.rmtree(engines_dir, ignore_errors=True)
        raise


def _build_all(trt: Any, gpu: dict[str, str], directory: Path, manifest: dict[str, Any], options: TensorRTOptions,
               strongly_typed: bool, engines_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from driftar_core.files import atomic_write_bytes, confined
    from driftar_export.manifest import MANIFEST, record_files, write_manifest
    cache_path = Path(options.timing_cache) if options.timing_cache else engines_dir / "timing.cache"
    timing = cache_path.read_bytes() if cache_path.is_file() else b""
    logger = trt.Logger(trt.Logger.WARNING)
    engines, written = {}, []
    for role, graph in manifest["graphs"].items():
        onnx_path = confined(directory, graph["file"], str(directory / MANIFEST))
        if options.precision == "fp16" and strongly_typed:
            onnx_path = fp16_graph(onnx_path, engines_dir)
        engine, timing = build_engine(trt, onnx_path, graph, options, strongly_typed, timing, logger)
        path = engines_dir / f"{role}.engine"
        atomic_write_bytes(path, engine)
        engines[role] = {"file": f"engines/{path.name}",            # its size + sha256: manifest "files"
                         "onnx": str(onnx_path.relative_to(directory)), "profile": profile_shapes(graph)}
        written += [engines[role]["file"], *([engines[role]["onnx"]] if onnx_path.parent == engines_dir else [])]
        log(f"built {role:14s} -> {path} ({len(engine) / 2**20:.1f} MiB)")
    atomic_write_bytes(cache_path, timing)
    if cache_path.resolve().parent == engines_dir.resolve():
        written.append(f"engines/{cache_path.name}")
    manifest["tensorrt"] = {"stamp": engine_stamp(trt, gpu, options, strongly_typed), "engines": engines,
                            "options": options.model_dump(), "timing_cache": str(cache_path)}
    record_files(directory, manifest, written)
    write_manifest(directory, manifest)
    return manifest


def fp16_graph(onnx_path: Path, out_dir: Path) -> Path:
    """The strongly typed build's input: an fp16-MatMul copy of the graph next to the engines."""
    import onnx

    from driftar_core.files import atomic_write_bytes
    from driftar_export.tensorrt.fp16 import convert_matmuls_to_fp16
    out = out_dir / f"{onnx_path.stem}.fp16.onnx"
    atomic_write_bytes(out, convert_matmuls_to_fp16(onnx.load(str(onnx_path))).SerializeToString())
    return out
