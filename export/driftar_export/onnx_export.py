"""Export one :class:`GraphSpec` to ONNX and prove it: checker, no specialised dims, parity at two shapes.

Follows timm's ``utils/onnx.py`` (export, ``onnx.checker.check_model(full_check=True)``, compare
ONNX Runtime with eager) on the torch.export-based exporter (``torch.onnx.export(dynamo=True)``,
the default since torch 2.9), with what that exporter needs on top (docs/layout.md "Export"):

- dynamic dims are explicit ``torch.export.Dim``s with bounds, shared across inputs by name;
- a dim the exporter specialised anyway (pytorch #152018: "Dim.DYNAMIC passes but does nothing")
  shows up as a fixed size in the ONNX input: that is an error here, not a silent fixed-shape graph;
- parity runs at the spec's two CHECK shapes, never at the example's.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from driftar_core.graphs import GraphSpec
from driftar_export.options import ExportError

ONNX_DTYPES = {1: "float32", 7: "int64", 9: "bool", 10: "float16", 16: "bfloat16"}


def _io_record(value_info: Any) -> dict[str, Any]:
    t = value_info.type.tensor_type
    shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
    return {"name": value_info.name, "dtype": ONNX_DTYPES.get(t.elem_type, str(t.elem_type)), "shape": shape}


def check_dims(spec: GraphSpec, model: Any) -> list[dict[str, Any]]:
    """The ONNX inputs must have the spec's names, dtypes, static sizes and SYMBOLIC dynamic dims."""
    records = [_io_record(v) for v in model.graph.input]
    if [r["name"] for r in records] != [spec_io.name for spec_io in spec.inputs]:
        raise ExportError(f"graph {spec.role}: ONNX inputs {[r['name'] for r in records]} != "
                          f"{[spec_io.name for spec_io in spec.inputs]} (an unused input was dropped by the exporter?)")
    for rec, spec_io in zip(records, spec.inputs):
        if rec["dtype"] != spec_io.dtype:
            raise ExportError(f"graph {spec.role}: input {spec_io.name} exported as {rec['dtype']}, expected {spec_io.dtype}")
        for axis, (got, want) in enumerate(zip(rec["shape"], spec_io.shape, strict=True)):
            if isinstance(want, str) and not isinstance(got, str):
                raise ExportError(
                    f"graph {spec.role}: dynamic dim {want!r} (input {spec_io.name}, axis {axis}) was specialised to "
                    f"{got} by the exporter (pytorch #152018); the graph would only run at that size. Find the "
                    "op that fixes it (torch.onnx.export(report=True)) and rewrite it shape-generically.")
            if isinstance(want, int) and isinstance(got, int) and got != want:
                raise ExportError(f"graph {spec.role}: input {spec_io.name} axis {axis} is {got}, expected {want}")
        rec["shape"] = list(spec_io.shape)                      # the spec's dim names (the exporter's are equal)
    return records


def export_graph(spec: GraphSpec, path: Path, opset: int) -> dict[str, Any]:
    """torch.onnx.export(dynamo=True) at the example shapes, then the checks; returns the manifest record."""
    import onnx
    g = torch.Generator().manual_seed(0)
    dims = spec.dims_at("example")
    args = spec.make_inputs(dims, g)
    spec.check_inputs(args, dims)
    log = io.StringIO()
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(log):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                spec.module, args, dynamic_shapes=spec.torch_dynamic_shapes(), input_names=[i.name for i in spec.inputs],
                output_names=spec.outputs, opset_version=opset, dynamo=True, external_data=False, optimize=True,
                verbose=False)
    except Exception as e:
        raise ExportError(f"torch.onnx.export failed for graph {spec.role}: {type(e).__name__}: {e}\n"
                          f"exporter log:\n{log.getvalue()[-2000:]}") from e
    big = sum(p.numel() * p.element_size() for p in spec.module.parameters()) > 1.5 * 2**30
    program.save(str(path), external_data=big)             # > 2 GiB protobuf limit -> weights beside the graph
    model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(str(path) if big else model, full_check=True)
    inputs = check_dims(spec, model)
    return {"file": path.name, "binds": spec.binds, "description": spec.description, "inputs": inputs,
            "outputs": [_io_record(v) for v in model.graph.output],
            "dims": {n: d.as_dict() for n, d in spec.dims.items()}, "notes": spec.notes}


def max_abs_diffs(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    out = {}
    for name, r in ref.items():
        o = ours[name]
        if o.shape != r.shape:
            raise ExportError(f"output {name}: shape {o.shape} vs PyTorch {r.shape}")
        out[name] = float(np.abs(o.astype(np.float64) - r.astype(np.float64)).max()) if r.size else 0.0
    return out


def parity(spec: GraphSpec, path: Path, atol: float, seed: int = 0, threads: int | None = 1) -> list[dict[str, Any]]:
    """ONNX Runtime (CPU) vs the PyTorch module at the two check shapes; raises above ``atol``."""
    from driftar_export.runtime.graphs import ort_session
    session = ort_session(path, threads)
    results = []
    for i in (0, 1):
        dims = spec.dims_at(i)
        args = spec.make_inputs(dims, torch.Generator().manual_seed(seed + 1 + i))
        spec.check_inputs(args, dims)
        with torch.no_grad():
            ref = spec.module(*args)
        ref = ref if isinstance(ref, tuple) else (ref,)
        ref_np = {n: t.detach().cpu().numpy() for n, t in zip(spec.outputs, ref)}
        got = dict(zip(spec.outputs, session.run(spec.outputs, {io.name: a.numpy() for io, a in zip(spec.inputs, args)})))
        diffs = max_abs_diffs(got, ref_np)
        results.append({"dims": dims, "max_abs_diff": diffs})
        worst = max(diffs.values())
        if not worst <= atol:                               # NaN fails too
            raise ExportError(f"graph {spec.role}: ONNX Runtime differs from PyTorch by {worst:.3g} > {atol:g} at "
                              f"{dims} ({diffs}); the export is not faithful")
    return results
