"""Run a bundle's TensorRT engines as a :class:`~driftar_export.runtime.graphs.GraphSet`.

The runtime half of the TensorRT Python API (10.x / 11.x): ``trt.Runtime(logger)
.deserialize_cuda_engine(bytes)`` -> ``create_execution_context()``, then per call
``set_input_shape`` (checked: a shape outside the engine's profile is refused here, naming it),
``set_tensor_address`` for every I/O tensor and ``execute_async_v3(stream)``. Device buffers are torch
tensors on the runner's own CUDA stream (copies and execution are ordered on it, never on the default
stream); no pycuda / cuda-python needed. Feed dtypes must be the engine's (``get_tensor_dtype``), and an
engine with host-location (shape) input tensors is refused at load: the graphs take none.

The engine stamp (TensorRT version, GPU compute capability) is checked BEFORE deserialising: a
mismatched engine is refused with a "rebuild" message (build.stamp_mismatch).
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from driftar_export.options import ExportError
from driftar_export.tensorrt.build import gpu_info, require_tensorrt, stamp_mismatch


class TensorRTGraphs:
    """``run(role, feeds)`` over the engines of ``manifest["tensorrt"]``. ``device``: where the buffers live
    ("cuda"; the CPU test suite runs a stand-in of the runtime API with "cpu")."""

    def __init__(self, directory: str | Path, manifest: dict[str, Any], device: str = "cuda"):
        import torch

        from driftar_core.files import confined
        directory = Path(directory)
        section = manifest.get("tensorrt")
        if not section:
            raise ExportError(f"{directory} has no TensorRT engines; build them with "
                              "driftar export --model MODEL --target tensorrt --out BUNDLE")
        trt = require_tensorrt()
        why = stamp_mismatch(section["stamp"], str(trt.__version__), gpu_info()["compute_capability"])
        if why:
            raise ExportError(why)
        self.trt, self.torch, self.device = trt, torch, torch.device(device)
        self.stream = torch.cuda.Stream() if self.device.type == "cuda" else None
        self.logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self.logger)
        self._dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                        trt.int64: torch.int64, trt.bool: torch.bool}
        self.engines, self.contexts, self.io = {}, {}, {}
        for role, e in section["engines"].items():
            engine = runtime.deserialize_cuda_engine(confined(directory, e["file"], "manifest.json").read_bytes())
            if engine is None:
                raise ExportError(f"TensorRT could not deserialise {e['file']}; rebuild the engines "
                                  "(driftar export --target tensorrt)")
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            host = [n for n in names if engine.get_tensor_location(n) == trt.TensorLocation.HOST]
            if host:
                raise ExportError(f"engine {e['file']} has host-location (shape) tensors {host}; the exported graphs "
                                  "take none: rebuild the engines from this bundle's graphs")
            self.engines[role] = engine
            self.contexts[role] = engine.create_execution_context()
            self.io[role] = {n: (engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT,
                                 self._dtypes[engine.get_tensor_dtype(n)]) for n in names}
        self.roles = set(self.engines)

    def run(self, role: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        ctx, keep, outputs = self.contexts[role], [], {}
        with torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
            for name, (is_input, dtype) in self.io[role].items():
                if not is_input:
                    continue
                host = torch.from_numpy(np.ascontiguousarray(feeds[name]))
                if host.dtype != dtype:
                    raise ValueError(f"TensorRT engine {role}: input {name} is {dtype}, got {host.dtype}")
                t = host.to(self.device, non_blocking=True)
                if not ctx.set_input_shape(name, tuple(t.shape)):
                    raise ValueError(f"TensorRT engine {role}: input {name} of shape {tuple(t.shape)} is outside "
                                     "its optimisation profile (the manifest's bounds); re-export with larger bounds")
                ctx.set_tensor_address(name, t.data_ptr())
                keep.append(t)                                       # alive until the sync
            for name, (is_input, dtype) in self.io[role].items():
                if not is_input:
                    out = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=dtype, device=self.device)
                    ctx.set_tensor_address(name, out.data_ptr())
                    outputs[name] = out
            handle = self.stream.cuda_stream if self.stream is not None else 0
            if not ctx.execute_async_v3(handle):
                raise RuntimeError(f"TensorRT execution of {role} failed (see the log)")
            result = {n: (t.float() if t.dtype == torch.float16 else t).cpu() for n, t in outputs.items()}
        if self.stream is not None:
            self.stream.synchronize()
        return {n: t.numpy() for n, t in result.items()}
