"""Turn what a user types (a run directory, a model directory, a zoo or registry name) into a bundle."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from driftar_core.bundle import CheckpointError


def find_model_dir(ref: str | Path) -> Path | None:
    """A run dir -> its final ``model/`` (or latest checkpoint); a bundle dir -> itself; else None."""
    p = Path(ref)
    if not p.exists():
        return None
    if (p / "config.json").is_file() and (p / "model.safetensors").is_file():
        return p
    if (p / "model" / "model.safetensors").is_file():
        return p / "model"
    latest = p / "checkpoints" / "latest"
    if latest.is_file():
        step_dir = p / "checkpoints" / latest.read_text().strip()
        if (step_dir / "model.safetensors").is_file():
            return step_dir
    raise CheckpointError(f"{p} exists but holds no model: expected config.json + model.safetensors, "
                          "a run directory with model/, or checkpoints/latest")


def load_model(ref: str, **overrides: Any) -> Any:
    """Load a bundle from a path or a registry name (``mar_tiny.digits`` loads zoo weights)."""
    model_dir = find_model_dir(ref)
    if model_dir is not None:
        from driftar_core.bundle import load_bundle
        return load_bundle(model_dir, **overrides)
    from driftar_core.registry import create_model, split_model_name_tag
    _, tag = split_model_name_tag(ref)
    if not tag and not ref.replace("_", "").isalnum():
        raise FileNotFoundError(f"{ref} is neither an existing path nor a model name")
    return create_model(ref, **overrides).eval()
