"""The exporters this plugin registers (``driftar_register_exporters``): ``onnx`` and ``tensorrt``.

Each is a ``driftar_core.interfaces.Exporter``: ``export(bundle, out_dir, **options)``, with
``preflight(**options)`` (fail fast, before the model is loaded: e.g. TensorRT missing),
``check_out(out_dir)`` (the destination can be written without losing anyone's files, also before
the model is loaded: driftar_export.destination) and ``load_runner(directory)`` (``driftar bench
--models onnx:DIR``, ``driftar run``).
Torch-free at import.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from driftar_core.interfaces import Exporter

from driftar_export.options import OnnxOptions, TensorRTOptions, parse_options


class OnnxExporter(Exporter):
    """``driftar export --target onnx``: graphs, manifest and parity (driftar_export.exporter)."""

    name = "onnx"

    def preflight(self, **options: Any) -> OnnxOptions:
        return parse_options(OnnxOptions, options, self.name)

    def check_out(self, out_dir: str | Path) -> Path:
        from driftar_export.destination import check_out_dir
        return check_out_dir(out_dir)

    def __call__(self, bundle: Any, out_dir: str | Path, ref: str | None = None, log: Callable[[str], None] = print,
                 **options: Any) -> dict[str, Any]:
        from driftar_export.exporter import export_onnx
        return export_onnx(bundle, out_dir, self.preflight(**options), ref=ref, log=log)

    def load_runner(self, directory: str | Path, **kwargs: Any) -> Any:
        """An ONNX Runtime runner (CPU unless ``providers`` says otherwise)."""
        from driftar_export.runtime.runner import Runner
        return Runner(directory, backend="onnxruntime", **kwargs)


class TensorRTExporter(Exporter):
    """``driftar export --target tensorrt``: the ONNX bundle (made first if ``out_dir`` has none) + engines."""

    name = "tensorrt"

    def preflight(self, **options: Any) -> TensorRTOptions:
        from driftar_export.tensorrt.build import preflight
        parsed = parse_options(TensorRTOptions, options, self.name)
        preflight()                                                   # tensorrt + GPU, else what to install
        return parsed

    def check_out(self, out_dir: str | Path) -> Path:
        from driftar_export.destination import check_out_dir
        return check_out_dir(out_dir)                                 # engines go into our own bundle only

    def __call__(self, bundle: Any, out_dir: str | Path, ref: str | None = None, log: Callable[[str], None] = print,
                 **options: Any) -> dict[str, Any]:
        from driftar_export.exporter import export_onnx, weights_digest
        from driftar_export.manifest import read_manifest
        from driftar_export.tensorrt.build import build_engines
        parsed = self.preflight(**options)
        out = self.check_out(out_dir)
        existing = read_manifest(out) if (out / "manifest.json").is_file() else None
        if existing is not None and existing["model"].get("weights_sha256") == weights_digest(bundle):
            log(f"using the ONNX graphs already in {out} (exported from these weights)")
        else:
            export_onnx(bundle, out, parsed.onnx, ref=ref, log=log)
        return build_engines(out, parsed, log=log)

    def load_runner(self, directory: str | Path, **kwargs: Any) -> Any:
        from driftar_export.runtime.runner import Runner
        return Runner(directory, backend="tensorrt")
