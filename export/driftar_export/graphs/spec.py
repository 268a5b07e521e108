"""What one exported graph is: a module with plain tensor I/O, its dynamic dims and their bounds.

A :class:`GraphSpec` carries everything the exporter and the parity check need:

- ``inputs``: name, dtype and shape per input; a shape entry is an int (static) or the name of a
  dynamic dim. The module's ``forward`` takes the inputs as arguments of the same names, in order.
- ``dims``: per dynamic dim, its bounds (the TensorRT optimisation profile's min / max), the value
  the example inputs use, and two CHECK values unlike the example's: parity runs at both, because
  ``torch.export`` may silently specialise a dim to its example value (pytorch #152018).
- ``make_inputs(dims, generator)``: realistic inputs at any dims (valid indices, left padding, E in
  [0, 1]), so that parity exercises the paths a sampler takes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

DTYPES = {"float32": torch.float32, "int64": torch.int64, "bool": torch.bool}


@dataclass(frozen=True)
class DimRange:
    """A dynamic dim: bounds [min, max], the example's value and two check values (neither the example)."""

    min: int
    max: int
    example: int
    checks: tuple[int, int]

    def __post_init__(self) -> None:
        if not self.min <= self.example <= self.max or self.example < 2:
            raise ValueError(f"example {self.example} must be in [{self.min}, {self.max}] and >= 2 "
                             "(torch.export specialises dims whose example is 0 or 1)")
        if any(not self.min <= c <= self.max or c == self.example for c in self.checks):
            raise ValueError(f"checks {self.checks} must lie in [{self.min}, {self.max}] and differ from "
                             f"the example {self.example}")

    @staticmethod
    def spread(lo: int, hi: int) -> "DimRange":
        """Example between the bounds, checks at both ends (or next to them when an end is the example)."""
        if hi - lo < 2:
            if hi < 2:
                raise ValueError(f"a dynamic dim needs a range that reaches 2, got [{lo}, {hi}]")
            ex = hi
            other = lo if lo != ex else hi
            return DimRange(lo, hi, ex, (other, other))
        ex = max(2, (lo + hi) // 2)
        return DimRange(lo, hi, ex, (lo, hi))

    def as_dict(self) -> dict[str, int | list[int]]:
        return {"min": self.min, "max": self.max, "example": self.example, "checks": list(self.checks)}


@dataclass(frozen=True)
class IO:
    name: str
    dtype: str                            # "float32" | "int64" | "bool"
    shape: tuple[int | str, ...]          # int = static, str = a dynamic dim's name

    def dims(self) -> set[str]:
        return {d for d in self.shape if isinstance(d, str)}


@dataclass
class GraphSpec:
    role: str                             # decoder, detokenize, target_step, target_verify, draft_step, ...
    module: nn.Module
    inputs: list[IO]
    outputs: list[str]
    dims: dict[str, DimRange]
    make_inputs: Callable[[dict[str, int], torch.Generator], tuple[Tensor, ...]]
    description: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        used = set().union(*(io.dims() for io in self.inputs)) if self.inputs else set()
        if used != set(self.dims):
            raise ValueError(f"graph {self.role}: dims used by inputs {sorted(used)} != declared {sorted(self.dims)}")

    def dims_at(self, which: str | int) -> dict[str, int]:
        """``"example"`` or a check index (0, 1) -> {dim: value}."""
        if which == "example":
            return {n: d.example for n, d in self.dims.items()}
        return {n: d.checks[int(which)] for n, d in self.dims.items()}

    def shape_of(self, io: IO, dims: dict[str, int]) -> tuple[int, ...]:
        return tuple(dims[d] if isinstance(d, str) else d for d in io.shape)

    def torch_dynamic_shapes(self) -> dict[str, dict[int, object]]:
        """torch.export dynamic_shapes: one ``Dim`` object per name, shared by every input using it."""
        dims = {n: torch.export.Dim(n, min=r.min, max=r.max) for n, r in self.dims.items()}
        return {io.name: {axis: dims[d] for axis, d in enumerate(io.shape) if isinstance(d, str)}
                for io in self.inputs}

    def check_inputs(self, args: tuple[Tensor, ...], dims: dict[str, int]) -> None:
        """make_inputs must return exactly the declared shapes and dtypes (a bug guard for adapters)."""
        for io, a in zip(self.inputs, args, strict=True):
            if tuple(a.shape) != self.shape_of(io, dims) or a.dtype != DTYPES[io.dtype]:
                raise AssertionError(f"{self.role}.{io.name}: made {tuple(a.shape)} {a.dtype}, declared "
                                     f"{self.shape_of(io, dims)} {io.dtype}")


def randn(shape: tuple[int, ...], g: torch.Generator, scale: float = 1.0) -> Tensor:
    return torch.randn(shape, generator=g) * scale


def rand(shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=g)
