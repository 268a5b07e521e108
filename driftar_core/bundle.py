"""A model bundle: tokenizer + AR backbone + token head (+ draft), saved as one directory.

On disk (timm ``save_for_hf`` / HF ModelHubMixin layout, safetensors only):

    config.json        {"format": 1, "arch", "backbone", "config": <validated backbone config>,
                        "files": {"model.safetensors": {"size", "sha256"}}, "step": N (trainer only)}
    model.safetensors  the state dict (EMA weights when saved by the trainer)
    README.md          a short card

Config and weights always travel together: loading verifies the weights' bytes against a recorded
hash (:func:`verify_model_dir`: a checkpoint's ``state.json``, a zoo ``card.json`` or ``config.json``'s
``files``), validates the config with the backbone's own pydantic model, rebuilds the network, loads
the weights strictly and refuses non-finite values (``docs/reliability.md``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from driftar_core.errors import CheckpointError, NonFiniteError  # noqa: F401  (re-exported)
from driftar_core.files import (  # noqa: F401  (atomic writers re-exported)
    IntegrityError, atomic_write_bytes, atomic_write_text, file_record, read_json_object, sha256_file,
    verify_records)
from driftar_core.weights import (  # noqa: F401  (re-exported)
    check_finite, load_safetensors, load_state_strict, save_safetensors)

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


class ModelBundle(nn.Module):
    """Everything one generation needs. ``draft`` is None unless the model does speculative decoding;
    ``phi`` is the drift loss's frozen feature map (Drift-AR bundles);
    ``sampler`` declares how the model samples by default (plain, or speculative up to a batch size)."""

    def __init__(self, tokenizer: Any, backbone: nn.Module, head: nn.Module, config: Any,
                 backbone_name: str, draft: nn.Module | None = None, arch: str = "", sampler: Any = None,
                 phi: nn.Module | None = None):
        from driftar_core.method.configs import SamplerSpec
        super().__init__()
        self.tokenizer = tokenizer  # a Module when it has weights (the patch tokenizer has none)
        self.backbone = backbone
        self.head = head
        self.draft = draft
        self.phi = phi              # Drift-AR's frozen feature map (copied from the trained target), or None
        self.config = config
        self.backbone_name = backbone_name
        self.arch = arch
        self.sampler: SamplerSpec = sampler if sampler is not None else SamplerSpec()   # the default sampler, as data

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def config_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "arch": self.arch, "backbone": self.backbone_name,
                "config": self.config.model_dump(mode="json")}

    def save(self, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None,
             card: str | None = None, step: int | None = None) -> Path:
        """Write the bundle directory: each file atomically, the weights first and config.json (which
        records their hash) last, so an interrupted save is caught by the hash check on load.
        ``step``: the training step of these weights (recorded; ``driftar sample`` reports it)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        sd = state_dict if state_dict is not None else self.state_dict()
        check_finite(sd, f"the weights to save in {directory}")
        save_safetensors(sd, directory / WEIGHTS)
        record = {**self.config_dict(), "files": {WEIGHTS: file_record(directory / WEIGHTS)}}
        if step is not None:
            record["step"] = int(step)
        atomic_write_text(directory / CONFIG, json.dumps(record, indent=2))
        atomic_write_text(directory / "README.md", card or default_card(self))
        return directory


def default_card(bundle: ModelBundle) -> str:
    return (f"# {bundle.arch or bundle.backbone_name}\n\nbackbone: `{bundle.backbone_name}`, "
            f"parameters: {bundle.num_params():,}, head NFE: {getattr(bundle.head, 'nfe', '?')}\n\n"
            "Load with `driftar_core.bundle.load_bundle(path)` or `driftar sample --checkpoint PATH`.\n")


# -------------------------------------------------------------------------------------------------
# Loading
# -------------------------------------------------------------------------------------------------


def read_config(directory: str | Path) -> dict[str, Any]:
    """``config.json`` of a model directory, checked for the keys a bundle needs."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a model directory: {CONFIG} is missing")
    cfg = read_json_object(path, CheckpointError, "restore it or re-save the model")
    missing = [k for k in ("backbone", "config") if k not in cfg]
    if missing or not isinstance(cfg.get("config"), dict) or not isinstance(cfg.get("backbone"), str) \
            or not isinstance(cfg.get("arch", ""), str):
        raise CheckpointError(f"{path} is not a driftar model config: it needs 'backbone' (a plugin name), "
                              f"'config' (an object) and optionally 'arch' (a name)"
                              f"{f'; missing {missing}' if missing else ''}")
    if cfg.get("format", FORMAT_VERSION) != FORMAT_VERSION:
        raise CheckpointError(f"{path} has model format {cfg['format']!r}; this driftar reads format {FORMAT_VERSION}")
    return cfg


def build_from_config(cfg: dict[str, Any], **overrides: Any) -> ModelBundle:
    """Rebuild an (untrained) bundle from a saved config.json dict, optionally with overrides."""
    from driftar_core.config import deep_update, validate
    from driftar_core.plugins import registries
    spec = registries().backbones.get(cfg["backbone"])
    if cfg.get("arch") in registries().models:                # an unregistered arch is a label (own variants)
        arch = registries().models.get(cfg["arch"])
        if arch.backbone != cfg["backbone"]:
            raise CheckpointError(f"config.json names architecture {cfg['arch']!r}, a {arch.backbone!r} model, "
                                  f"but backbone {cfg['backbone']!r}; the file was edited: restore it")
    config = validate(spec.config_cls, deep_update(cfg["config"], overrides), where="model")
    bundle = spec.build(config)
    bundle.arch = cfg.get("arch", "")
    return bundle


def verify_model_dir(directory: str | Path, weights: str = WEIGHTS, cfg: dict[str, Any] | None = None) -> str:
    """Check the weights of a model directory against the hash recorded for them; returns what vouched.

    The records, first found wins: ``state.json`` (a training checkpoint: every file), ``card.json``
    (a zoo entry), ``config.json``'s ``files`` (any bundle driftar saved). A directory with none of them
    (saved by an older driftar) loads with a note that nothing could be verified. ``cfg``: the directory's
    config.json when the caller has read it already.
    """
    directory = Path(directory)
    if (directory / "state.json").is_file():
        from driftar_core.train.checkpoint import verify_checkpoint_files
        verify_checkpoint_files(directory)
        return "state.json"
    if (directory / "card.json").is_file():
        from driftar_core.zoo import load_card, verify_weights
        try:
            card = load_card(directory)
        except ValueError as e:
            raise CheckpointError(str(e)) from None
        if card.weights_path.resolve() == (directory / weights).resolve():
            verify_weights(card, read=False)
            return "card.json"
    files = (cfg if cfg is not None else read_config(directory)).get("files")
    if isinstance(files, dict) and weights in files:
        try:
            verify_records(directory, {weights: files[weights]}, f"{directory / CONFIG}")
        except IntegrityError as e:
            raise CheckpointError(str(e)) from None
        return CONFIG
    return ""


def load_bundle(directory: str | Path, weights: str = WEIGHTS, *, say: Any = None, **overrides: Any) -> ModelBundle:
    """Load a bundle directory (config + weights), verified (:func:`verify_model_dir`) and finite.
    Sampling-only overrides (e.g. num_iter) are allowed. ``say``: where a note goes (no hash to check)."""
    directory = Path(directory)
    cfg = read_config(directory)
    if not verify_model_dir(directory, weights, cfg) and say is not None:
        say(f"note: {directory} records no hash of {weights} (saved by an older driftar); it was not verified")
    bundle = build_from_config(cfg, **overrides)
    sd = load_safetensors(directory / weights)
    check_finite(sd, f"the weights in {directory / weights}")
    load_state_strict(bundle, sd, f"{directory / weights}")
    return bundle.eval()
