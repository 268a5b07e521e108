"""fp16 ONNX graphs for strongly typed TensorRT engines: precision carried in the ONNX types.

TensorRT 11 removed ``BuilderFlag.FP16`` / ``BF16`` / ``OBEY_PRECISION_CONSTRAINTS``; a strongly typed
network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``) runs every layer in the types the ONNX
graph gives it (NVIDIA, "TensorRT 10.x to 11.x Python API" migration notes). So the fp16 graph must
say where fp16 is safe:

- MatMul / Gemm (the FLOPs) take fp16 inputs; their weight initializers are stored in fp16 and their
  outputs are cast back to fp32 right away;
- everything else stays fp32: LayerNormalization, the RMSNorm decomposition (Pow, ReduceMean, Sqrt),
  Softmax, the entropy's Log and ReduceSum, the AdaLN elementwise ops. fp16 LayerNorm after attention
  overflows (TensorRT #2564, #3692; the builder warns about it); a small LayerNorm eps becomes 0 in
  fp16 (pytorch #86580); mixed fp32/fp16 LayerNorm inputs are refused by ORT (pytorch #190338).

The graph's inputs and outputs keep their fp32 types, so the runner is unchanged.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

FP16_OPS = ("MatMul", "Gemm")


def convert_matmuls_to_fp16(model: Any) -> Any:
    """fp32 ONNX ModelProto -> a copy whose MatMul/Gemm run in fp16 (fp32 everywhere else; a graph without
    them comes back unchanged)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    uses = Counter(name for n in graph.node for name in n.input)
    casts: dict[str, str] = {}                                   # fp32 name -> its fp16 twin
    nodes = []

    def fp16_name(name: str) -> str:
        if name in casts:
            return casts[name]
        init = inits.get(name)
        if init is not None and init.data_type == TensorProto.FLOAT and uses[name] == 1:
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), name)
            init.CopyFrom(half)                                  # only the matmul reads it: store it in fp16
            casts[name] = name
        else:
            casts[name] = f"{name}__fp16"
            nodes.append(helper.make_node("Cast", [name], [casts[name]], to=TensorProto.FLOAT16,
                                          name=f"{name}__to_fp16"))
        return casts[name]

    converted = 0
    for node in graph.node:
        if node.op_type not in FP16_OPS:
            nodes.append(node)
            continue
        for i, name in enumerate(node.input):
            if name:
                node.input[i] = fp16_name(name)
        out = node.output[0]
        node.output[0] = f"{out}__fp16"
        nodes.append(node)
        nodes.append(helper.make_node("Cast", [node.output[0]], [out], to=TensorProto.FLOAT, name=f"{out}__to_fp32"))
        converted += 1
    if not converted:                                            # nothing to gain (e.g. detokenize): unchanged
        return model
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]                                      # re-inferred below with the new types
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def precision_report(model: Any) -> dict[str, int]:
    """How many nodes of each kind run in fp16 / fp32 (for the manifest and the tests)."""
    from onnx import TensorProto
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input,
                                                             *model.graph.output]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    out: Counter[str] = Counter()
    for n in model.graph.node:
        if n.op_type == "Cast":
            continue
        kinds = {types.get(x) for x in n.input if x}
        tag = "fp16" if TensorProto.FLOAT16 in kinds else "fp32" if TensorProto.FLOAT in kinds else "other"
        out[f"{n.op_type}:{tag}"] += 1
    return dict(out)
