"""The driftar-export plugin: the ``onnx`` and ``tensorrt`` exporters and the ``driftar run`` command,
registered through driftar's public hooks (entry point ``export`` in the ``driftar`` group).

Cheap to import: no torch, onnx or tensorrt here; they load when an exporter or a runner is used.
"""
from __future__ import annotations

from typing import Any

from driftar_core.hookspecs import hookimpl


def _onnx() -> Any:
    from driftar_export.targets import OnnxExporter
    return OnnxExporter()


def _tensorrt() -> Any:
    from driftar_export.targets import TensorRTExporter
    return TensorRTExporter()


@hookimpl
def driftar_register_exporters(register: Any) -> None:
    register("onnx", _onnx)
    register("tensorrt", _tensorrt)


@hookimpl
def driftar_register_commands(cli: Any) -> None:
    from driftar_export.cli import run
    cli.add_command(run)
