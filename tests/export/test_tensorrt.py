"""TensorRT: everything up to the engine build runs here; the real build is skipped without tensorrt + a GPU.

TensorRT cannot be installed on the CPU machines, so the builder AND the runtime are exercised against a
stand-in module implementing the slice of the TensorRT 10 / 11 Python API that build.py and runtime.py
call, with the real enum values (``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` is 1 in 10.x, after
the deprecated EXPLICIT_BATCH, and 0 in 11.x, which removed it; 11 has no FP16 /
OBEY_PRECISION_CONSTRAINTS flags), a parser that fails on an operator it is told not to support,
profiles that validate their shapes (``add_optimization_profile`` returns -1 for a bad one), a timing
cache that can be refused, and a runtime half whose engines are the bundle's ONNX graphs run by ONNX
Runtime through the tensor addresses the caller sets (``set_input_shape`` refuses shapes outside the
profile). What a stand-in cannot prove (that real TensorRT parses these graphs and matches ONNX
Runtime on a GPU) is the last test, and benchmarks/check_tensorrt.py on a GPU machine.
"""
from __future__ import annotations

import ctypes
import json
import shutil
import types
from enum import IntEnum

import numpy as np
import pytest
import torch

from driftar_export.options import ExportError, TensorRTOptions

NP = {"float32": np.float32, "int64": np.int64, "bool": np.bool_}


def fake_tensorrt(version: str, unsupported: tuple[str, ...] = (), foreign_cache: bool = False):
    """The TensorRT Python API surface build.py and runtime.py use, recording calls in ``trt.calls``."""
    import onnx
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []
    major = int(version.split(".")[0])
    trt.NetworkDefinitionCreationFlag = IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0} if major >= 11
                                                else {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})
    flags = {"TF32": 2} if major >= 11 else {"TF32": 2, "FP16": 0, "OBEY_PRECISION_CONSTRAINTS": 11}
    trt.BuilderFlag = IntEnum("BuilderFlag", flags)
    trt.MemoryPoolType = IntEnum("MemoryPoolType", {"WORKSPACE": 0})
    trt.TensorIOMode = IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.TensorLocation = IntEnum("TensorLocation", {"DEVICE": 0, "HOST": 1})
    trt.float32, trt.float16, trt.int32, trt.int64, trt.bool = "float32", "float16", "int32", "int64", "bool"

    class Logger:
        WARNING = 2

        def __init__(self, level=None):
            pass

        def log(self, severity, message):
            trt.calls.append(("log", message))

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs = flags, {}
            trt.calls.append(("create_network", flags))

    class Parser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

        def parse_from_file(self, path):
            model = onnx.load(path)
            trt.calls.append(("parse", path, {i.name: i.data_type for i in model.graph.initializer}))
            self.errors = [f"node {n.name}: no importer for op {n.op_type}" for n in model.graph.node
                           if n.op_type in unsupported]
            self.network.inputs = {i.name: len(i.type.tensor_type.shape.dim) for i in model.graph.input}
            return not self.errors

    class Profile:
        def __init__(self):
            self.valid, self.shapes = True, {}

        def set_shape(self, name, lo, opt, hi):
            trt.calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))
            ok = len(lo) == len(opt) == len(hi) and all(a <= b <= c for a, b, c in zip(lo, opt, hi))
            self.valid &= ok                                  # real TensorRT logs the error; the profile is invalid
            self.shapes[name] = (tuple(lo), tuple(hi))

    class Cache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return self.data + b"+"

    class Config:
        builder_optimization_level = None

        def __init__(self):
            self.profiles = []

        def set_memory_pool_limit(self, pool, size):
            trt.calls.append(("workspace", size))

        def set_flag(self, flag):
            trt.calls.append(("set_flag", flag.name))

        def clear_flag(self, flag):
            trt.calls.append(("clear_flag", flag.name))

        def add_optimization_profile(self, profile):
            trt.calls.append(("add_profile", profile.valid))
            if not profile.valid:
                return -1
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data):
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            trt.calls.append(("timing_cache", cache.data))
            if foreign_cache and cache.data:
                return False
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            source = next(c[1] for c in reversed(trt.calls) if c[0] == "parse")
            profile = config.profiles[0].shapes
            return json.dumps({"onnx": source, "profile": {k: [list(v[0]), list(v[1])] for k, v in profile.items()}
                               }).encode()

    class Engine:
        """A deserialised stand-in engine: the ONNX graph it was built from, run by ONNX Runtime."""

        def __init__(self, blob):
            import onnxruntime as ort
            meta = json.loads(blob)
            self.session = ort.InferenceSession(meta["onnx"], providers=["CPUExecutionProvider"])
            self.profile = meta["profile"]
            ins = [(i.name, trt.TensorIOMode.INPUT, i.type) for i in self.session.get_inputs()]
            outs = [(o.name, trt.TensorIOMode.OUTPUT, o.type) for o in self.session.get_outputs()]
            self.tensors = ins + outs
            self.num_io_tensors = len(self.tensors)

        def get_tensor_name(self, i):
            return self.tensors[i][0]

        def get_tensor_mode(self, name):
            return next(t[1] for t in self.tensors if t[0] == name)

        def get_tensor_dtype(self, name):
            kind = next(t[2] for t in self.tensors if t[0] == name)
            return {"tensor(float)": trt.float32, "tensor(float16)": trt.float16, "tensor(int64)": trt.int64,
                    "tensor(bool)": trt.bool}[kind]

        def get_tensor_location(self, name):
            return trt.TensorLocation.DEVICE

        def create_execution_context(self):
            return Context(self)

    class Context:
        """set_input_shape validates against the profile; outputs get their shapes by running the graph."""

        def __init__(self, engine):
            self.engine, self.shapes, self.addresses, self.results = engine, {}, {}, None

        def set_input_shape(self, name, shape):
            lo, hi = self.engine.profile[name]
            if len(shape) != len(lo) or any(not a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            self.shapes[name] = tuple(shape)
            self.results = None
            return True

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr

        def _feeds(self):
            feeds = {}
            for name, mode, kind in self.engine.tensors:
                if mode == trt.TensorIOMode.INPUT:
                    dtype = np.dtype(NP[{"tensor(float)": "float32", "tensor(int64)": "int64",
                                         "tensor(bool)": "bool"}[kind]])
                    n = int(np.prod(self.shapes[name]))
                    buf = (ctypes.c_char * (n * dtype.itemsize)).from_address(self.addresses[name])
                    feeds[name] = np.frombuffer(buf, dtype=dtype, count=n).reshape(self.shapes[name]).copy()
            return feeds

        def get_tensor_shape(self, name):
            if self.results is None:
                self.results = dict(zip([o.name for o in self.engine.session.get_outputs()],
                                        self.engine.session.run(None, self._feeds())))
            return self.results[name].shape

        def execute_async_v3(self, stream):
            trt.calls.append(("execute", stream))
            results = dict(zip([o.name for o in self.engine.session.get_outputs()],
                               self.engine.session.run(None, self._feeds())))
            for name, value in results.items():
                ctypes.memmove(self.addresses[name], np.ascontiguousarray(value).ctypes.data, value.nbytes)
            return True

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            return Engine(blob)

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, Parser, Runtime
    return trt


GPU = {"gpu": "stand-in", "compute_capability": "9.0"}


@pytest.fixture
def bundle_copy(mar_bundle, tmp_path):
    return shutil.copytree(mar_bundle, tmp_path / "bundle")


def test_tensorrt10_fp32_build_uses_manifest_profiles_and_a_timing_cache(bundle_copy):
    from driftar_export.manifest import profile_shapes, read_manifest
    from driftar_export.tensorrt.build import build_engines
    trt = fake_tensorrt("10.13.0")
    manifest = build_engines(bundle_copy, TensorRTOptions(), trt=trt, gpu=GPU, log=lambda s: None)
    shapes = {(c[1], c[2], c[3], c[4]) for c in trt.calls if c[0] == "set_shape"}
    for g in read_manifest(bundle_copy)["graphs"].values():
        for name, (lo, opt, hi) in profile_shapes(g).items():
            assert (name, lo, opt, hi) in shapes
    assert ("set_shape", "keep", (1, 2), (4, 9), (8, 17)) in trt.calls      # rows 1..8, kept buffer..buffer+L-1
    assert [c for c in trt.calls if c[0] == "create_network"] == [("create_network", 0)] * 3
    assert ("clear_flag", "TF32") in trt.calls and not any(c[0] == "set_flag" for c in trt.calls)
    assert [c[1] for c in trt.calls if c[0] == "timing_cache"] == [b"", b"+", b"++"]  # one cache through all graphs
    assert (bundle_copy / "engines" / "timing.cache").read_bytes() == b"+++"
    stamp = manifest["tensorrt"]["stamp"]
    assert stamp == {"tensorrt": "10.13.0", "gpu": "stand-in", "compute_capability": "9.0", "precision": "fp32",
                     "strongly_typed": False}
    for role, e in manifest["tensorrt"]["engines"].items():
        assert json.loads((bundle_copy / e["file"]).read_bytes())["onnx"].endswith(f"{role}.onnx")


@pytest.mark.parametrize("version, flag_bit", [("10.13.0", 1), ("11.0.0", 0)])
def test_fp16_is_a_strongly_typed_network_from_fp16_graphs(bundle_copy, version, flag_bit):
    """No FP16 flag and no per-layer fp32 pinning (which would pin integer and shape layers too): the network is
    STRONGLY_TYPED (the flag's real bit in each version) and the parsed graph carries fp16 MatMul weights."""
    from onnx import TensorProto

    from driftar_export.tensorrt.build import build_engines
    trt = fake_tensorrt(version)
    manifest = build_engines(bundle_copy, TensorRTOptions(precision="fp16"), trt=trt, gpu=GPU, log=lambda s: None)
    assert {c[1] for c in trt.calls if c[0] == "create_network"} == {1 << flag_bit}
    assert not any(c[0] == "set_flag" for c in trt.calls)
    parsed = [c for c in trt.calls if c[0] == "parse"]
    assert all(c[1].endswith(".fp16.onnx") for c in parsed)
    decoder = next(c for c in parsed if "decoder" in c[1])[2]
    assert decoder["head.input_proj.weight"] == TensorProto.FLOAT16                  # a Gemm weight: fp16
    assert manifest["tensorrt"]["stamp"]["strongly_typed"] is True


def test_build_failures_are_named_not_swallowed(bundle_copy):
    """A parser error lists the node; a refused profile fails with the bounds; a timing cache from another
    GPU is dropped with a log line and the build goes on."""
    from driftar_export.manifest import read_manifest
    from driftar_export.tensorrt import build
    with pytest.raises(ExportError, match="rejected target_step.onnx: node .*no importer for op Slice"):
        build.build_engines(bundle_copy, TensorRTOptions(), trt=fake_tensorrt("10.13.0", unsupported=("Slice",)),
                            gpu=GPU, log=lambda s: None)
    graph = read_manifest(bundle_copy)["graphs"]["decoder"]
    graph["dims"]["rows"]["example"] = graph["dims"]["rows"]["max"] + 1                 # opt above max
    trt = fake_tensorrt("10.13.0")
    with pytest.raises(ExportError, match="refused the optimisation profile"):
        build.build_engine(trt, bundle_copy / "graphs" / "decoder.onnx", graph, TensorRTOptions(), False, b"",
                           trt.Logger())
    assert not (bundle_copy / "engines").exists()             # the failed first build left nothing behind
    cache = bundle_copy.parent / "other-gpu.cache"
    cache.write_bytes(b"other-gpu")
    trt = fake_tensorrt("10.13.0", foreign_cache=True)
    build.build_engines(bundle_copy, TensorRTOptions(timing_cache=str(cache)), trt=trt, gpu=GPU, log=lambda s: None)
    assert any(c[0] == "log" and "timed afresh" in c[1] for c in trt.calls)


def test_whole_sampler_runs_on_the_runtime_stand_in(bundle_copy, mar_runner, monkeypatch):
    """runtime.py end to end (engine I/O, set_input_shape, set_tensor_address, execute_async_v3) on CPU:
    the same loop as ONNX Runtime, and what the profile or dtypes forbid is refused."""
    import sys

    from driftar_export.runtime.runner import Runner
    from driftar_export.tensorrt import runtime
    from driftar_export.tensorrt.build import build_engines
    trt = fake_tensorrt("10.13.0")
    build_engines(bundle_copy, TensorRTOptions(), trt=trt, gpu=GPU, log=lambda s: None)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(runtime, "gpu_info", lambda: GPU)
    trt_runner = Runner(bundle_copy, backend="tensorrt", trt_device="cpu")
    labels = torch.tensor([1, 2, 3])
    a = mar_runner.sample(labels, generator=torch.Generator().manual_seed(0))
    b = trt_runner.sample(labels, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(b.images, a.images, atol=0, rtol=0)
    assert sum(c[0] == "execute" for c in trt.calls) == b.counts.backbone_passes + b.counts.head_nfe + 1
    D, c = 16, 4
    with pytest.raises(ValueError, match="outside its optimisation profile"):
        trt_runner.graphs.run("detokenize", {"tokens": np.zeros((99, 16, c), np.float32)})
    with pytest.raises(ValueError, match="input z is torch.float32, got torch.float64"):
        trt_runner.graphs.run("decoder", {"z": np.zeros((2, D)), "entropy": np.zeros(2, np.float32),
                                          "entropy_global": np.zeros(2, np.float32), "eps": np.zeros((2, c), np.float32)})


def test_fp16_graph_keeps_normalisation_in_fp32_and_runs(mar_bundle, tmp_path):
    import onnx
    import onnxruntime as ort

    from driftar_export.tensorrt.fp16 import convert_matmuls_to_fp16, precision_report
    model = convert_matmuls_to_fp16(onnx.load(str(mar_bundle / "graphs" / "target_step.onnx")))
    report = precision_report(model)
    assert report.get("MatMul:fp16", 0) > 0 and "MatMul:fp32" not in report
    assert report.get("LayerNormalization:fp32", 0) > 0 and "LayerNormalization:fp16" not in report
    assert "Softmax:fp16" not in report and "ReduceSum:fp16" not in report
    onnx.save(model, str(tmp_path / "half.onnx"))
    rng = np.random.default_rng(0)
    feeds = {"tokens": rng.standard_normal((2, 16, 4)).astype(np.float32), "keep": np.tile(np.arange(8), (2, 1)),
             "labels": np.array([3, 10]), "positions": np.tile(np.arange(10, 14), (2, 1))}
    full = ort.InferenceSession(str(mar_bundle / "graphs" / "target_step.onnx"), providers=["CPUExecutionProvider"])
    half = ort.InferenceSession(str(tmp_path / "half.onnx"), providers=["CPUExecutionProvider"])
    diff = np.abs(full.run(["z"], feeds)[0] - half.run(["z"], feeds)[0]).max()
    assert 0 < diff < 5e-2                                                           # fp16 matmuls, fp32 norms


def test_mismatched_engine_is_refused_with_rebuild(bundle_copy, monkeypatch):
    import sys

    from driftar_export.runtime.runner import Runner
    from driftar_export.tensorrt import runtime
    from driftar_export.tensorrt.build import build_engines, stamp_mismatch
    assert stamp_mismatch({"tensorrt": "10.13.0", "compute_capability": "9.0"}, "10.13.0", "9.0") is None
    msg = stamp_mismatch({"tensorrt": "10.13.0", "compute_capability": "9.0"}, "11.0.0", "8.6")
    assert "TensorRT 10.13.0" in msg and "compute capability 9.0" in msg and "Rebuild" in msg
    build_engines(bundle_copy, TensorRTOptions(), trt=fake_tensorrt("10.13.0"), gpu=GPU, log=lambda s: None)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.13.0"))
    monkeypatch.setattr(runtime, "gpu_info", lambda: {"gpu": "older", "compute_capability": "8.0"})
    with pytest.raises(ExportError, match="compute capability 9.0 .this GPU: 8.0.*Rebuild"):
        Runner(bundle_copy, backend="tensorrt")


def _real_tensorrt_and_gpu():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed (pip install tensorrt on a GPU machine)"
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_real_tensorrt_and_gpu() is not None, reason=f"real TensorRT build: {_real_tensorrt_and_gpu()}")
def test_real_engines_match_onnx_runtime(bundle_copy):
    from driftar_export.runtime.runner import Runner
    from driftar_export.tensorrt.build import build_engines
    build_engines(bundle_copy, TensorRTOptions(), log=lambda s: None)
    ort_runner, trt_runner = Runner(bundle_copy), Runner(bundle_copy, backend="tensorrt")
    labels = torch.tensor([1, 2, 3])
    a = ort_runner.sample(labels, generator=torch.Generator().manual_seed(0))
    b = trt_runner.sample(labels, generator=torch.Generator().manual_seed(0))
    assert float((a.images - b.images).abs().max()) < 1e-3
