"""The exported sampler: a bundle's graphs bound into the model's own sampling loop (ONNX Runtime or TensorRT).

    runner = Runner("bundles/mar")                        # providers=("cpu",) | ("tensorrt", "cuda", "cpu")
    out = runner.sample(labels, generator=torch.Generator().manual_seed(0))   # = the PyTorch sampler's images

The model is rebuilt from the bundle's ``config.json`` as a skeleton: the backbone plugin's classes with
no weights (every float parameter and buffer is NaN, so a host step that touched one would surface as
a non-finite image, never as a silently different one). Every method its generation calls into the
network (the manifest's ``graphs[role].binds``: ``backbone.step_net``, ``head.decode``, ...) is
rebound to the graph that computes it (``driftar_core.graphs.bind_graphs``). The loop is then
``driftar_core.sampling.generate`` / ``speculative.speculative_generate`` itself, the function eager
PyTorch runs: orders, noise draws, schedules, CFG, acceptance and rollback exist once, and a seed
gives the PyTorch sampler's images by construction. The host side stays in torch (CPU tensors; the
graph calls convert without copies), which also keeps the door open to device-resident I/O binding.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from driftar_core.errors import NonFiniteError
from driftar_export.manifest import has_draft, read_manifest
from driftar_export.runtime.graphs import GraphSet
from driftar_export.sampler import torch_sampler

OVERRIDABLE = {"plain": {"num_iter", "cfg", "cfg_schedule", "temperature"},
               "speculative": {"cfg", "cfg_schedule", "temperature", "draft_len", "tau0", "kappa", "early_stop_gamma",
                               "entropy_ema_init", "entropy_ema_decay"}}


def check_settings(settings: dict[str, Any]) -> None:
    """Sampler settings are valid before any graph runs, by the config models that hold their bounds
    (SamplingConfig, SpeculativeConfig: finite, counts >= 1 or 0, temperature > 0, ...)."""
    from driftar_core.config import SamplingConfig, validate
    from driftar_core.method.configs import SpeculativeConfig
    for model in (SamplingConfig, SpeculativeConfig):
        validate(model, {k: v for k, v in settings.items() if k in model.model_fields and v is not None},
                 where="sampler")


class Runner:
    """Sampling over an export bundle. backend: "onnxruntime" (providers in priority order) or "tensorrt"."""

    device = "cpu"              # where ``sample`` returns its torch tensors (bench / evaluate move labels here)

    def __init__(self, directory: str | Path, backend: str = "onnxruntime", providers: tuple[str, ...] = ("cpu",),
                 threads: int | None = None, trt_device: str = "cuda"):
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self.model, self.settings = self.manifest["model"], self.manifest["sampler"]
        self.backend = backend
        self.graphs: GraphSet
        if backend == "onnxruntime":
            from driftar_export.runtime.graphs import OrtGraphs
            self.graphs = OrtGraphs(self.directory, self.manifest, tuple(providers), threads)
        elif backend == "tensorrt":
            from driftar_export.tensorrt.runtime import TensorRTGraphs
            self.graphs = TensorRTGraphs(self.directory, self.manifest, device=trt_device)
        else:
            raise ValueError(f"unknown backend {backend!r}: onnxruntime or tensorrt")
        self.max_batch = int(self.manifest["options"]["max_batch"])
        self.bundle = skeleton(self.directory)
        from driftar_core.graphs import bind_graphs
        bind_graphs(self.bundle, self.manifest["graphs"], lambda role, feeds: self.graphs.run(role, feeds))

    # ---- settings and sampling --------------------------------------------------------------------

    def resolve(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The manifest's sampler settings with ``overrides`` (None = keep); unknown keys fail."""
        forced = overrides.pop("sampler", None)
        kind = forced or self.settings["kind"]
        if kind not in OVERRIDABLE or (kind == "speculative" and not has_draft(self.manifest["graphs"])):
            raise ValueError(f"this bundle cannot run a {kind!r} sampler (graphs: {sorted(self.graphs.roles)})")
        bad = {k for k, v in overrides.items() if v is not None} - OVERRIDABLE[kind]
        if bad:
            raise ValueError(f"{sorted(bad)} cannot be set for the {kind} sampler (allowed: {sorted(OVERRIDABLE[kind])})")
        recorded = self.manifest.get("samplers", {}).get(kind, self.settings if kind == self.settings["kind"] else {})
        base = {k: v for k, v in recorded.items() if k in OVERRIDABLE[kind]}
        out = {"num_iter": None, **base, **{k: v for k, v in overrides.items() if v is not None}}
        check_settings(out)
        limit = self.manifest["options"].get("max_draft_len")
        if kind == "speculative" and limit is not None and out["draft_len"] > limit:
            raise ValueError(f"draft_len {out['draft_len']} exceeds the bundle's max_draft_len {limit} (target_verify's "
                             f"bound); re-export with --set max_draft_len={out['draft_len']}")
        resolved = {"kind": kind, **out}
        up_to = self.settings.get("speculate_up_to")
        if kind == "speculative" and forced is None and up_to is not None and not any(
                overrides.get(k) is not None for k in ("draft_len", "tau0", "kappa")):
            resolved["speculate_up_to"] = up_to            # the default sampler: larger batches decode plainly
        return resolved

    def sample(self, labels: Any, generator: Any = None, noise: Any = None, **overrides: Any) -> Any:
        """The PyTorch samplers' contract: labels [B] -> SampleOutput (torch tensors), through the model's own
        loop with the manifest's sampler settings (``overrides``: ``sampler``, ``cfg``, ``kappa``, ...).

        A batch above ``max_batch`` runs in chunks, one after the other from the same generator (the
        speculative sampler then accepts per chunk). ``noise`` [B, L, 1, c] replaces the noise draw.
        """
        import torch

        from driftar_core.sampling import SampleOutput
        labels = torch.as_tensor(labels).cpu().reshape(-1)
        classes = int(self.model["class_num"])
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise ValueError(f"class labels must be in [0, {classes - 1}], got {labels.tolist()[:8]}")
        sample = torch_sampler(self.resolve(dict(overrides)))
        outs = []
        with torch.inference_mode():
            for i in range(0, len(labels), self.max_batch):
                chunk = None if noise is None else torch.as_tensor(noise)[i:i + self.max_batch]
                outs.append(sample(self.bundle, labels[i:i + self.max_batch], generator=generator, noise=chunk))
        images = torch.cat([o.images for o in outs])
        tokens = torch.cat([o.tokens for o in outs])
        if not (bool(torch.isfinite(images).all()) and bool(torch.isfinite(tokens).all())):
            bad = int((~torch.isfinite(images)).sum())
            raise NonFiniteError(f"the bundle {self.directory} produced non-finite values ({bad} NaN/Inf pixels of "
                                 f"{images.numel()}, batch {len(labels)}): non-finite values are errors, not pixels. "
                                 "The graphs or the sampler settings are broken; check the settings, re-export the bundle")
        counts = outs[0].counts
        for o in outs[1:]:                                                     # wall time adds up over chunks
            for key, v in o.counts.extra.items():
                if key.endswith("_s") and key in counts.extra:
                    counts.extra[key] += v
        counts.extra["chunks"] = len(outs)
        return SampleOutput(tokens=tokens, images=images, counts=counts)

    @staticmethod
    def default_sampler(runner: "Runner", labels: Any, generator: Any = None, **overrides: Any) -> Any:
        """``sampler(bundle, labels, generator=...)`` as driftar bench / evaluate call it."""
        return runner.sample(labels, generator=generator, **overrides)


def skeleton(directory: Path) -> Any:
    """The model of the bundle's ``config.json`` without weights: built on the meta device, then given
    uninitialised CPU storage filled with NaN (integer buffers zero). Only its host logic runs."""
    import torch

    from driftar_core.bundle import build_from_config, read_config
    with torch.device("meta"):
        bundle = build_from_config(read_config(directory))
    bundle.to_empty(device="cpu")
    with torch.no_grad():
        for t in [*bundle.parameters(), *bundle.buffers()]:
            t.fill_(math.nan if t.is_floating_point() else 0)
    return bundle.eval()
