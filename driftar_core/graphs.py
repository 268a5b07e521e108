"""What one exported graph is: ONE method of the bundle with plain tensor I/O, its dynamic dims and bounds.

The sampling loop is written once (``driftar_core.sampling.generate``, ``speculative.speculative_generate``
and the backbones' ``new_state / step / commit / verify / rollback``); it reaches the networks only
through a few methods with plain tensor I/O (``MAR.step_net``, ``NextStep1.feed_net``,
``DriftDecoder.decode``, ``tokenizer.decode``, ...). Each such method is a graph: ``GraphSpec.binds``
names it (``"backbone.step_net"``), the exporter traces it, and an export runtime rebinds it to the
graph (``bind_graphs``), so eager PyTorch, ONNX Runtime and TensorRT run the very same loop. A backbone
plugin declares its graphs in ``BackboneSpec.graphs`` (docs/plugins.md "Export").

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
from typing import Any, Callable

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


def resolve_method(root: Any, path: str) -> tuple[Any, str]:
    """``(bundle, "backbone.step_net")`` -> ``(bundle.backbone, "step_net")``: the object and method name."""
    *owners, name = path.split(".")
    obj = root
    for part in owners:
        obj = getattr(obj, part)
    return obj, name


class Bound(nn.Module):
    """The traced module of a graph: ``forward(*inputs)`` calls the bound method of the bundle."""

    def __init__(self, bundle: nn.Module, binds: str):
        super().__init__()
        for name, child in bundle.named_children():            # the graph's weights keep the bundle's key names
            self.add_module(name, child)
        self.binds = binds
        owner, name = resolve_method(bundle, binds)
        self._method = getattr(owner, name)

    def forward(self, *inputs: Tensor) -> Any:
        return self._method(*inputs)


@dataclass
class GraphSpec:
    """One graph: ``role`` (its file and TensorRT profile), ``binds`` (the bundle method it computes, its
    inputs in that method's argument order and its outputs in its return order)."""

    role: str                             # decoder, detokenize, target_step, target_verify, draft_step, ...
    binds: str                            # "backbone.step_net", "head.decode", "tokenizer.decode", ...
    bundle: nn.Module                     # whose method it is
    inputs: list[IO]
    outputs: list[str]
    dims: dict[str, DimRange]
    make_inputs: Callable[[dict[str, int], torch.Generator], tuple[Tensor, ...]]
    description: str = ""
    notes: list[str] = field(default_factory=list)
    pinned: dict[str, int] = field(default_factory=dict)   # an alias: another role's graph with these dims fixed
    alias_of: str | None = None
    head_rows: int | None = None          # the most decoder rows one call of this graph feeds (bounds ``decoder``)

    def __post_init__(self) -> None:
        used = set().union(*(io.dims() for io in self.inputs)) if self.inputs else set()
        if used != set(self.dims):
            raise ValueError(f"graph {self.role}: dims used by inputs {sorted(used)} != declared {sorted(self.dims)}")

    @property
    def module(self) -> nn.Module:
        """The module to trace: the bound method of the bundle."""
        return Bound(self.bundle, self.binds)

    def dims_at(self, which: str | int) -> dict[str, int]:
        """``"example"`` or a check index (0, 1) -> {dim: value}."""
        if which == "example":
            return {n: d.example for n, d in self.dims.items()}
        return {n: d.checks[int(which)] for n, d in self.dims.items()}

    def shape_of(self, io: IO, dims: dict[str, int]) -> tuple[int, ...]:
        return tuple(dims[d] if isinstance(d, str) else d for d in io.shape)

    def torch_dynamic_shapes(self) -> dict[str, tuple[dict[int, object], ...]]:
        """torch.export dynamic_shapes of ``Bound.forward(*inputs)``: one ``Dim`` object per name, shared by
        every input using it, in input order."""
        dims = {n: torch.export.Dim(n, min=r.min, max=r.max) for n, r in self.dims.items()}
        return {"inputs": tuple({axis: dims[d] for axis, d in enumerate(io.shape) if isinstance(d, str)}
                                for io in self.inputs)}

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


@dataclass(frozen=True)
class ExportBounds:
    """The bounds an export is built for (``driftar export --set ...``): the graphs' dynamic dims end there."""

    max_batch: int = 16                   # images per call (CFG doubles the rows)
    max_draft_len: int | None = None      # k of the speculative sampler (None: the model's declared one)
    max_prompt_len: int | None = None     # text backbones: the longest prompt prefix (None: the class prompts')

    @property
    def max_rows(self) -> int:
        return 2 * self.max_batch


class GraphMethod:
    """A bundle method served by exported graphs: torch tensors in, ``run(role, feeds)`` (numpy), torch out.

    ``roles``: the graphs computing the method, each with its input names, output names and pinned dims
    (an alias such as ``target_step`` = ``target_verify`` at one element); the first role whose pinned
    dims match the inputs runs. Zero-copy on the CPU (``Tensor.numpy`` / ``torch.from_numpy``).
    """

    def __init__(self, run: Callable[[str, dict[str, Any]], dict[str, Any]], roles: list[dict[str, Any]]):
        self.run, self.roles = run, roles

    def _role(self, feeds: dict[str, Any]) -> dict[str, Any]:
        for role in self.roles:
            if all(feeds[io].shape[axis] == v for io, axis, v in role["pinned"]):
                return role
        return self.roles[-1]

    def __call__(self, *inputs: Tensor) -> Any:
        names = self.roles[0]["inputs"]
        if len(inputs) != len(names):
            raise TypeError(f"graph method takes {len(names)} inputs ({', '.join(names)}), got {len(inputs)}")
        feeds = {n: _host(x) for n, x in zip(names, inputs)}
        role = self._role(feeds) if len(self.roles) > 1 else self.roles[0]
        out = self.run(role["role"], feeds)
        if len(role["outputs"]) == 1:
            return torch.from_numpy(out[role["outputs"][0]])
        return tuple(torch.from_numpy(out[o]) for o in role["outputs"])


def _host(x: Tensor) -> Any:
    """A CPU numpy view of ``x`` (no copy when it is already a contiguous CPU tensor)."""
    if x.device.type != "cpu" or not x.is_contiguous():
        x = x.detach().cpu().contiguous()
    return x.numpy()


def bind_graphs(bundle: nn.Module, graphs: dict[str, dict[str, Any]], run: Callable[..., dict[str, Any]]) -> None:
    """Rebind every method a manifest's graphs compute (``graphs``: role -> record with ``binds``, ``inputs``
    and ``outputs`` (``{"name", ...}`` each), ``dims`` and ``alias_of``) to :class:`GraphMethod`s calling ``run``."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for role, rec in graphs.items():
        inputs = [io["name"] for io in rec["inputs"]]
        pinned = []
        if rec.get("alias_of"):
            for io in rec["inputs"]:
                for axis, d in enumerate(io["shape"]):
                    if isinstance(d, str) and rec["dims"][d]["min"] == rec["dims"][d]["max"]:
                        pinned.append((io["name"], axis, rec["dims"][d]["min"]))
        by_method.setdefault(rec["binds"], []).append(
            {"role": role, "inputs": inputs, "outputs": [o["name"] for o in rec["outputs"]], "pinned": pinned})
    for binds, roles in by_method.items():
        roles.sort(key=lambda r: not r["pinned"])                   # pinned aliases are tried first
        owner, name = resolve_method(bundle, binds)
        setattr(owner, name, GraphMethod(run, roles))
