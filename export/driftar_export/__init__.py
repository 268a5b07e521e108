"""driftar-export: Drift-AR models as deployable graphs with the sampling loop on the host.

    driftar export --model mar_tiny_drift.digits --target onnx --out bundles/mar
    driftar run --bundle bundles/mar -n 16 --out grid.png [--compare]
    driftar export --model bundles/mar --target tensorrt --out bundles/mar      (GPU + tensorrt)

Layout, in data-flow order:

- ``options``: the exporters' pydantic options (every default lives there; torch-free).
- ``graphs/``: what is exported. ``spec`` (a graph's I/O, dynamic dims and their bounds), ``common``
  (the 1-NFE ``decoder`` and ``detokenize``), ``masked`` (MAR's ``target_step``) and ``causal``
  (NextStep-1's ``*_prefill``, ``target_step``, ``target_verify``, ``draft_step`` with the KV cache as
  explicit inputs and outputs). No in-graph loops (docs/ECOSYSTEM.md section 3).
- ``onnx_export`` / ``bundle``: torch.onnx.export(dynamo=True), onnx.checker, parity against PyTorch
  at shapes unlike the example's, and the bundle directory with ``manifest.json``.
- ``runtime/``: the host loops (plain MAR, plain and speculative causal) over any graph executor,
  the ONNX Runtime executor and the ``Runner`` that reproduces the PyTorch samplers for a seed.
- ``tensorrt/``: engines from the bundle's graphs (TensorRT 10 and 11), the engine stamp, a runner.

Importing this package imports nothing heavy.
"""

__version__ = "0.1.0"
