"""A model bundle: tokenizer + AR backbone + token head (+ draft), saved as one directory.

On disk (timm ``save_for_hf`` / HF ModelHubMixin layout, safetensors only):

    config.json        {"arch", "backbone", "config": <validated backbone config>, "format": 1}
    model.safetensors  the state dict (EMA weights when saved by the trainer)
    README.md          a short card

Config and weights always travel together: loading validates the config with the backbone's own
pydantic model, rebuilds the network and loads the weights strictly.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded (missing file, corrupt, or keys that do not match)."""


class ModelBundle(nn.Module):
    """Everything one generation needs. ``draft`` is None unless the model does speculative decoding."""

    def __init__(self, tokenizer: Any, backbone: nn.Module, head: nn.Module, config: Any,
                 backbone_name: str, draft: nn.Module | None = None, arch: str = ""):
        super().__init__()
        self.tokenizer = tokenizer  # a Module when it has weights (the patch tokenizer has none)
        self.backbone = backbone
        self.head = head
        self.draft = draft
        self.config = config
        self.backbone_name = backbone_name
        self.arch = arch

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def config_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "arch": self.arch, "backbone": self.backbone_name,
                "config": self.config.model_dump(mode="json")}

    def save(self, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None,
             card: str | None = None) -> Path:
        """Write the bundle directory atomically (files land complete or not at all)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        sd = state_dict if state_dict is not None else self.state_dict()
        save_safetensors(sd, directory / "model.safetensors")
        atomic_write_text(directory / "config.json", json.dumps(self.config_dict(), indent=2))
        atomic_write_text(directory / "README.md", card or default_card(self))
        return directory


def default_card(bundle: ModelBundle) -> str:
    return (f"# {bundle.arch or bundle.backbone_name}\n\nbackbone: `{bundle.backbone_name}`, "
            f"parameters: {bundle.num_params():,}, head NFE: {getattr(bundle.head, 'nfe', '?')}\n\n"
            "Load with `driftar_core.bundle.load_bundle(path)` or `driftar sample --checkpoint PATH`.\n")


# -------------------------------------------------------------------------------------------------
# Atomic file helpers
# -------------------------------------------------------------------------------------------------


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_safetensors(state_dict: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in state_dict.items()}
    atomic_write_bytes(Path(path), save(tensors, metadata=metadata))


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for truncated/corrupt files
        raise CheckpointError(f"cannot read {path}: {e} (the file is corrupt or not safetensors; "
                              "re-download or re-save it)") from e


def load_state_strict(module: nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    own = module.state_dict()
    bad = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{what} does not match the model: {len(bad)} tensors have other shapes "
                              f"({'; '.join(bad[:3])}). Was it saved with another config?")
    missing, unexpected = module.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{what} does not match the model: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}. Was it saved from another architecture?")


# -------------------------------------------------------------------------------------------------
# Loading
# -------------------------------------------------------------------------------------------------


def read_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a model directory: config.json is missing")
    return json.loads(path.read_text())


def build_from_config(cfg: dict[str, Any], **overrides: Any) -> ModelBundle:
    """Rebuild an (untrained) bundle from a saved config.json dict, optionally with overrides."""
    from driftar_core.config import deep_update, validate
    from driftar_core.registry import registries
    spec = registries().backbones.get(cfg["backbone"])
    config = validate(spec.config_cls, deep_update(cfg["config"], overrides), where="model")
    bundle = spec.build(config)
    bundle.arch = cfg.get("arch", "")
    return bundle


def load_bundle(directory: str | Path, weights: str = "model.safetensors", **overrides: Any) -> ModelBundle:
    """Load a bundle directory (config + weights). Sampling-only overrides (e.g. num_iter) are allowed."""
    directory = Path(directory)
    bundle = build_from_config(read_config(directory), **overrides)
    load_state_strict(bundle, load_safetensors(directory / weights), f"{directory / weights}")
    return bundle.eval()
