"""driftar-export: Drift-AR models as deployable graphs with the sampling loop on the host.

    driftar export --model mar_tiny_drift.digits --target onnx --out bundles/mar
    driftar run --bundle bundles/mar -n 16 --out grid.png [--compare]
    driftar export --model bundles/mar --target tensorrt --out bundles/mar      (GPU + tensorrt)

One sampling loop for every runtime: a graph IS a method the model's own loop calls into the network
(``driftar_core.graphs``: ``backbone.step_net``, ``backbone.feed_net``, ``head.decode``, ...). The
backbone plugin declares its graphs (``BackboneSpec.graphs``); this package traces them, checks them and
runs them, and names no backbone.

Layout, in data-flow order:

- ``options``: the exporters' pydantic options (every default lives there; torch-free).
- ``graphs/common``: the graphs of the core's components (the 1-NFE ``decoder``, ``detokenize``, the
  window draft's ``draft_window``). No in-graph loops (docs/layout.md "Export").
- ``exporter`` / ``onnx_export``: the backbone's declared graphs plus those, torch.onnx.export(dynamo=True),
  onnx.checker, parity against PyTorch at shapes unlike the example's, the bundle directory with
  ``manifest.json``, and a whole-sampler check.
- ``runtime/``: graph executors (ONNX Runtime; ``run(role, feeds)``) and the ``Runner``: the model's
  skeleton with its graph methods bound to them, driven by ``generate`` / ``speculative_generate``.
- ``tensorrt/``: engines from the bundle's graphs (TensorRT 10 and 11), the engine stamp, an executor.

Importing this package imports nothing heavy.
"""

__version__ = "0.1.0"
