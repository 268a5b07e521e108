"""TensorRT: everything up to the engine build runs here; the real build is skipped without tensorrt + a GPU.

TensorRT cannot be installed on the CPU machines, so the builder is exercised against a stand-in module
that implements the slice of the TensorRT 10 / 11 Python API that build.py calls and records the calls
(11 has no FP16 / OBEY_PRECISION_CONSTRAINTS flags, as in NVIDIA's 10 -> 11 migration notes). What a
stand-in cannot prove (that real TensorRT parses these graphs and matches ONNX Runtime) is the last test,
and benchmarks/check_tensorrt.py on a GPU machine.
"""
from __future__ import annotations

import shutil
import types
from enum import IntEnum

import numpy as np
import pytest
import torch

from driftar_export.options import ExportError, TensorRTOptions

ONNX_LAYER_TYPES = {"LayerNormalization": "NORMALIZATION", "Softmax": "SOFTMAX", "ReduceMean": "REDUCE",
                    "ReduceSum": "REDUCE", "Log": "UNARY", "Exp": "UNARY", "MatMul": "MATRIX_MULTIPLY",
                    "Gemm": "MATRIX_MULTIPLY"}


def fake_tensorrt(version: str):
    """The TensorRT Python API surface build.py uses, recording calls in ``trt.calls``."""
    import onnx
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []
    major = int(version.split(".")[0])
    trt.NetworkDefinitionCreationFlag = IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 5}, start=0)
    flags = {"TF32": 2} if major >= 11 else {"TF32": 2, "FP16": 0, "OBEY_PRECISION_CONSTRAINTS": 11}
    trt.BuilderFlag = IntEnum("BuilderFlag", flags)
    trt.MemoryPoolType = IntEnum("MemoryPoolType", {"WORKSPACE": 0})
    trt.LayerType = IntEnum("LayerType", {"NORMALIZATION": 1, "SOFTMAX": 2, "REDUCE": 3, "UNARY": 4,
                                          "MATRIX_MULTIPLY": 5, "OTHER": 6})
    trt.float32 = "float32"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Layer:
        def __init__(self, kind):
            self.type, self.precision, self.num_outputs, self.out_types = kind, None, 1, {}

        def set_output_type(self, i, t):
            self.out_types[i] = t

    class Network:
        def __init__(self, flags):
            self.flags, self.layers = flags, []
            trt.calls.append(("create_network", flags))

        @property
        def num_layers(self):
            return len(self.layers)

        def get_layer(self, i):
            return self.layers[i]

    class Parser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path):
            model = onnx.load(path)
            trt.calls.append(("parse", path, {i.name: i.data_type for i in model.graph.initializer}))
            self.network.layers = [Layer(getattr(trt.LayerType, ONNX_LAYER_TYPES.get(n.op_type, "OTHER")))
                                   for n in model.graph.node]
            return True

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            trt.calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

    class Cache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return self.data + b"+"

    class Config:
        builder_optimization_level = None

        def set_memory_pool_limit(self, pool, size):
            trt.calls.append(("workspace", size))

        def set_flag(self, flag):
            trt.calls.append(("set_flag", flag.name))

        def clear_flag(self, flag):
            trt.calls.append(("clear_flag", flag.name))

        def add_optimization_profile(self, profile):
            trt.calls.append(("add_profile",))

        def create_timing_cache(self, data):
            self.cache = Cache(data)
            return self.cache

        def set_timing_cache(self, cache, ignore_mismatch):
            trt.calls.append(("timing_cache", cache.data))

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
            return b"engine:%d" % network.num_layers

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, Parser
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
        assert (bundle_copy / e["file"]).read_bytes().startswith(b"engine:")


def test_tensorrt10_fp16_pins_norms_softmax_reductions_to_fp32(bundle_copy):
    from driftar_export.tensorrt.build import build_engines
    trt = fake_tensorrt("10.13.0")
    layers = []
    original = trt.OnnxParser.parse_from_file

    def parse(self, path):
        ok = original(self, path)
        layers.extend(self.network.layers)
        return ok
    trt.OnnxParser.parse_from_file = parse
    build_engines(bundle_copy, TensorRTOptions(precision="fp16"), trt=trt, gpu=GPU, log=lambda s: None)
    assert ("set_flag", "FP16") in trt.calls and ("set_flag", "OBEY_PRECISION_CONSTRAINTS") in trt.calls
    pinned = {l.type.name for l in layers if l.precision == "float32"}
    assert pinned == {"NORMALIZATION", "SOFTMAX", "REDUCE", "UNARY"}
    assert all(l.precision is None for l in layers if l.type.name == "MATRIX_MULTIPLY")


def test_tensorrt11_fp16_is_strongly_typed_from_fp16_graphs(bundle_copy):
    """11.x has no FP16 flag: the network is STRONGLY_TYPED and the parsed graph carries fp16 MatMul weights."""
    from onnx import TensorProto

    from driftar_export.tensorrt.build import build_engines
    trt = fake_tensorrt("11.0.0")
    manifest = build_engines(bundle_copy, TensorRTOptions(precision="fp16"), trt=trt, gpu=GPU, log=lambda s: None)
    assert {c[1] for c in trt.calls if c[0] == "create_network"} == {1 << 5}
    assert not any(c[0] == "set_flag" for c in trt.calls)
    parsed = [c for c in trt.calls if c[0] == "parse"]
    assert all(c[1].endswith(".fp16.onnx") for c in parsed)
    decoder = next(c for c in parsed if "decoder" in c[1])[2]
    assert decoder["head.input_proj.weight"] == TensorProto.FLOAT16                  # a Gemm weight: fp16
    assert manifest["tensorrt"]["stamp"]["strongly_typed"] is True


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
    draws = ort_runner.draws(3, torch.Generator().manual_seed(0))
    a = ort_runner.generate(np.array([1, 2, 3]), **draws)
    b = trt_runner.generate(np.array([1, 2, 3]), **draws)
    assert np.abs(a.images - b.images).max() < 1e-3
