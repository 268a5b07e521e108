"""Run a bundle's TensorRT engines as a :class:`~driftar_export.runtime.graphs.GraphSet`.

The runtime half of the TensorRT Python API (10.x / 11.x): ``trt.Runtime(logger)
.deserialize_cuda_engine(bytes)`` -> ``create_execution_context()``, then per call
``set_input_shape``, ``set_tensor_address`` for every I/O tensor and ``execute_async_v3(stream)``.
Device buffers are torch CUDA tensors on torch's current stream (no pycuda / cuda-python needed).

The engine stamp (TensorRT version, GPU compute capability) is checked BEFORE deserialising: a
mismatched engine is refused with a "rebuild" message (build.stamp_mismatch).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from driftar_export.options import ExportError
from driftar_export.tensorrt.build import gpu_info, require_tensorrt, stamp_mismatch


class TensorRTGraphs:
    def __init__(self, directory: str | Path, manifest: dict[str, Any]):
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
        self.trt, self.torch = trt, torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self.logger)
        self.engines, self.contexts, self.io = {}, {}, {}
        for role, e in section["engines"].items():
            engine = runtime.deserialize_cuda_engine(confined(directory, e["file"], "manifest.json").read_bytes())
            if engine is None:
                raise ExportError(f"TensorRT could not deserialise {e['file']}; rebuild the engines "
                                  "(driftar export --target tensorrt)")
            self.engines[role] = engine
            self.contexts[role] = engine.create_execution_context()
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            self.io[role] = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.roles = set(self.engines)
        self._dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                        trt.int64: torch.int64, trt.bool: torch.bool}

    def run(self, role: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        engine, ctx = self.engines[role], self.contexts[role]
        keep = []                                                    # device buffers alive until the sync
        for name, is_input in self.io[role].items():
            if is_input:
                t = torch.from_numpy(np.ascontiguousarray(feeds[name])).cuda()
                ctx.set_input_shape(name, tuple(t.shape))
                ctx.set_tensor_address(name, t.data_ptr())
                keep.append(t)
        outputs = {}
        for name, is_input in self.io[role].items():
            if not is_input:
                shape = tuple(ctx.get_tensor_shape(name))
                out = torch.empty(shape, dtype=self._dtypes[engine.get_tensor_dtype(name)], device="cuda")
                ctx.set_tensor_address(name, out.data_ptr())
                outputs[name] = out
        stream = torch.cuda.current_stream()
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution of {role} failed (see the log)")
        stream.synchronize()
        return {n: t.float().cpu().numpy() if t.dtype == torch.float16 else t.cpu().numpy() for n, t in outputs.items()}
