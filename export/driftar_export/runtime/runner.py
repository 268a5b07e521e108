"""The exported sampler: a bundle's graphs + the host loop its manifest names, on ONNX Runtime or TensorRT.

    runner = Runner("bundles/mar")                        # providers=("cpu",) | ("tensorrt", "cuda", "cpu")
    out = runner.generate(labels, noise=noise, orders=orders)   # numpy; tokens, images, counts
    out = runner.sample(labels, generator=torch.Generator().manual_seed(0))  # = the PyTorch sampler's images

The random draws are inputs. ``draws`` makes them with torch exactly as the PyTorch samplers do (MAR:
``new_state``'s orders, then ``draw_noise``; NextStep-1: ``draw_noise``), which is what lets a seed
reproduce the PyTorch images; ``generate`` itself needs only numpy and the graph runtime.
``Runner.default_sampler`` has the signature ``driftar bench`` and ``evaluate`` expect of a sampler.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from driftar_core.errors import NonFiniteError
from driftar_core.interfaces import PassCounts
from driftar_export.manifest import DRAFT_ROLES, read_manifest
from driftar_export.runtime.graphs import GraphSet

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


@dataclass
class RunOutput:
    tokens: np.ndarray          # [B, L, c]
    images: np.ndarray          # [B, C, H, W] in [-1, 1]
    counts: PassCounts


class Runner:
    """Sampling over an export bundle. backend: "onnxruntime" (providers in priority order) or "tensorrt"."""

    device = "cpu"              # where ``sample`` returns its torch tensors (bench / evaluate move labels here)

    def __init__(self, directory: str | Path, backend: str = "onnxruntime", providers: tuple[str, ...] = ("cpu",),
                 threads: int | None = None):
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
            self.graphs = TensorRTGraphs(self.directory, self.manifest)
        else:
            raise ValueError(f"unknown backend {backend!r}: onnxruntime or tensorrt")
        self.max_batch = int(self.manifest["options"]["max_batch"])

    # ---- the loops ---------------------------------------------------------------------------------

    def resolve(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The manifest's sampler settings with ``overrides`` (None = keep); unknown keys fail."""
        forced = overrides.pop("sampler", None)
        kind = forced or self.settings["kind"]
        if kind not in OVERRIDABLE or (kind == "speculative" and not DRAFT_ROLES & set(self.graphs.roles)):
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

    def generate(self, labels: Any, noise: np.ndarray, orders: np.ndarray | None = None, **overrides: Any) -> RunOutput:
        """labels [B], noise [B, L, 1, c], orders [B, L] (masked backbones) -> tokens, images, counts."""
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        B = len(labels)
        if not 1 <= B <= self.max_batch:
            raise ValueError(f"batch {B} is outside the bundle's bounds [1, {self.max_batch}]; re-export with "
                             f"--set max_batch={B} or sample in chunks (driftar run --batch-size)")
        if len(labels) and (labels.min() < 0 or labels.max() >= self.model["class_num"]):
            raise ValueError(f"class labels must be in [0, {self.model['class_num'] - 1}], got {labels.tolist()[:8]}")
        s = self.resolve(dict(overrides))
        if B > s.get("speculate_up_to", B):                # the eager default sampler's rule (speculative.max_batch)
            s = self.resolve({**overrides, "sampler": "plain"})
        noise = np.ascontiguousarray(noise, dtype=np.float32)
        common = {"cfg": s["cfg"], "cfg_schedule": s["cfg_schedule"], "temperature": s["temperature"]}
        if self.model["kind"] == "masked":
            from driftar_export.runtime.masked_loop import generate_masked
            if orders is None:
                raise ValueError("a masked backbone needs the per-sample generation orders [B, L] (see Runner.draws)")
            tokens, counts = generate_masked(self.graphs, self.model, labels, np.asarray(orders, np.int64), noise,
                                             num_iter=s["num_iter"], **common)
        else:
            from driftar_export.runtime.causal_loop import generate_causal, speculative_causal
            target = self._causal("target")
            if s.get("num_iter") not in (None, self.model["token_shape"][0]):
                raise ValueError(f"a causal backbone generates one token per AR step: num_iter must be "
                                 f"{self.model['token_shape'][0]}, got {s['num_iter']}")
            if s["kind"] == "plain":
                tokens, counts = generate_causal(self.graphs, target, labels, noise, **common)
            else:
                spec = {k: s[k] for k in ("draft_len", "tau0", "kappa", "early_stop_gamma", "entropy_ema_init",
                                          "entropy_ema_decay")}
                tokens, counts = speculative_causal(self.graphs, target, self._causal("draft"), labels, noise,
                                                    **spec, **common)
        images = self.graphs.run("detokenize", {"tokens": np.ascontiguousarray(tokens)})["images"]
        if not (np.isfinite(images).all() and np.isfinite(tokens).all()):
            bad = int((~np.isfinite(images)).sum())
            raise NonFiniteError(f"the bundle {self.directory} produced non-finite values ({bad} NaN/Inf pixels of "
                                 f"{images.size}, batch {B}): non-finite values are errors, not pixels. The graphs or "
                                 "the sampler settings are broken; check the settings, re-export the bundle")
        return RunOutput(tokens=tokens, images=images, counts=counts)

    def _causal(self, name: str) -> Any:
        from driftar_export.runtime.causal_state import CausalModel
        causal = self.manifest["causal"]
        if name == "draft" and causal["draft"].get("kind") == "window":
            from driftar_export.runtime.causal_window import WindowDraftHost
            return WindowDraftHost(self.graphs, causal["draft"])
        one, many = ("target_step", "target_verify") if name == "target" else ("draft_step", "draft_step")
        return CausalModel(self.graphs, name, causal[name], causal["prompts"], tuple(self.model["token_shape"]), one, many)

    # ---- torch glue: the PyTorch samplers' random draws, bench / evaluate ---------------------------

    def draws(self, batch: int, generator: Any = None) -> dict[str, np.ndarray]:
        """The random inputs the PyTorch sampler draws for ``batch`` images, in its order."""
        import torch
        L, c = self.model["token_shape"]
        out = {}
        if self.model["kind"] == "masked":                                     # MAR.new_state -> sample_orders
            u = (torch.rand((batch, L)) if generator is None
                 else torch.rand((batch, L), generator=generator, device=generator.device))
            out["orders"] = torch.argsort(u, dim=1).cpu().numpy()
        noise = torch.randn(batch, L, 1, c, generator=generator, device="cpu")  # sampling.draw_noise
        out["noise"] = noise.numpy()
        return out

    def sample(self, labels: Any, generator: Any = None, **overrides: Any) -> Any:
        """The PyTorch samplers' contract: labels [B] (tensor) -> SampleOutput with torch tensors.

        The draws are made for the whole batch first (as the PyTorch sampler makes them); a batch above
        ``max_batch`` then runs in chunks, which is exact for the plain samplers (rows are independent)
        and a per-chunk acceptance for the speculative one (it commits the min over its batch).
        """
        import torch

        from driftar_core.sampling import SampleOutput
        labels = torch.as_tensor(labels).cpu()
        draws = self.draws(len(labels), generator)
        outs = [self.generate(labels[i:i + self.max_batch].numpy(),
                              **{k: v[i:i + self.max_batch] for k, v in draws.items()}, **overrides)
                for i in range(0, len(labels), self.max_batch)]
        counts = outs[0].counts
        for o in outs[1:]:                                                     # wall time adds up over chunks
            for key in ("backbone_s", "draft_s", "head_s"):
                if key in counts.extra:
                    counts.extra[key] += o.counts.extra[key]
        counts.extra["chunks"] = len(outs)
        return SampleOutput(tokens=torch.from_numpy(np.concatenate([o.tokens for o in outs])),
                            images=torch.from_numpy(np.concatenate([o.images for o in outs])), counts=counts)

    @staticmethod
    def default_sampler(runner: "Runner", labels: Any, generator: Any = None, **overrides: Any) -> Any:
        """``sampler(bundle, labels, generator=...)`` as driftar bench / evaluate call it."""
        return runner.sample(labels, generator=generator, **overrides)
