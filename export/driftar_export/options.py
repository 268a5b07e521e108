"""Options of the exporters (``driftar export --target onnx|tensorrt --set KEY=VALUE``).

Pydantic with ``extra="forbid"``: an unknown or misspelt option fails before any work, naming the key
and the known ones. Every default lives here and nowhere else. Torch-free.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from driftar_core.config import ConfigError, Strict, validate

OPSET = 20          # LayerNormalization needs 17; torch 2.14's exporter emits 20 (Gelu); TensorRT 10 parses 20
PARITY_ATOL = 1e-4  # fp32 graphs vs PyTorch (issue 5: "within 1e-4 (fp32)")


class ExportError(ValueError):
    """A model or an option that cannot be exported; the message says why and what to do instead."""


class OnnxOptions(Strict):
    """``--target onnx``. Bounds of the dynamic dims come from the model config and these numbers."""

    max_batch: int = Field(16, ge=1)            # images per sampling call (rows double with CFG); bench uses 16
    max_draft_len: int | None = Field(None, ge=1)  # causal: bound of target_verify (k + 1 rows); None = model's k
    max_prompt_len: int | None = Field(None, ge=2)  # causal: prefix tokens <bos> .. <boi>; None = longest class prompt
    opset: int = Field(OPSET, ge=17)            # >= 17 keeps LayerNorm one fp32 op (LayerNormalization)
    precision: Literal["fp32"] = "fp32"         # fp16 graphs: see tensorrt.precision (strongly typed engines)
    sampler: Literal["default", "plain", "speculative"] = "default"  # loop the runner reproduces
    parity_atol: float = Field(PARITY_ATOL, gt=0, le=0.1)  # a looser check would not catch a wrong graph
    check_sampler: bool = True                  # also run the whole ORT loop against PyTorch once
    check_batch: int = Field(2, ge=1)           # images of that check
    seed: int = Field(0, ge=0, lt=2**63)        # seed of the parity inputs and of the sampler check


class TensorRTOptions(Strict):
    """``--target tensorrt``: engines from an ONNX bundle (made first when ``--out`` has none)."""

    onnx: OnnxOptions = Field(default_factory=OnnxOptions)
    precision: Literal["fp32", "fp16"] = "fp32"  # fp16: TRT 10 builder flag; TRT 11 strongly typed (see build.py)
    workspace_gib: float = Field(4.0, gt=0)     # builder scratch memory (MemoryPoolType.WORKSPACE)
    timing_cache: str | None = None             # path; None = <bundle>/engines/timing.cache
    builder_optimization_level: int = Field(3, ge=0, le=5)  # TensorRT's default 3
    parity_atol: float | None = Field(None, gt=0, le=0.5)  # engine vs ONNX Runtime; None = 1e-4 fp32, 5e-2 fp16

    @property
    def atol(self) -> float:
        return self.parity_atol if self.parity_atol is not None else (1e-4 if self.precision == "fp32" else 5e-2)


def parse_options(cls: type[Strict], raw: dict[str, Any], target: str) -> Any:
    """Validate ``--set`` options for ``target``; unknown keys fail with the known ones listed."""
    try:
        return validate(cls, raw, where=f"export.{target}")
    except ConfigError as e:
        raise ExportError(str(e)) from None
