"""Turn what a user types (a run directory, a model directory, a zoo or registry name) into a bundle."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from driftar_core.bundle import CheckpointError


def _recorded_step(model_dir: Path) -> int | None:
    """The training step a model directory records (``config.json`` ``step``, or a checkpoint's ``state.json``)."""
    for name in ("state.json", "config.json"):
        try:
            step = json.loads((model_dir / name).read_text()).get("step")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(step, int):
            return step
    return None


def _latest_checkpoint(run: Path) -> Path | None:
    """The complete checkpoint ``checkpoints/latest`` names (weights and state.json present), or None."""
    from driftar_core.train.checkpoint import latest_step_dir
    step_dir = latest_step_dir(run / "checkpoints")
    if step_dir is None or not (step_dir / "model.safetensors").is_file() or not (step_dir / "state.json").is_file():
        return None
    return step_dir


def find_model_dir(ref: str | Path, say: Callable[[str], None] | None = None) -> Path | None:
    """A bundle dir -> itself; a run dir -> the NEWER of its final ``model/`` and ``checkpoints/latest``
    (a run resumed past its end and interrupted has a newer checkpoint than ``model/``); else None.
    ``say`` gets one line naming what was chosen for a run directory, and why."""
    p = Path(ref)
    if not p.exists():
        return None
    if (p / "config.json").is_file() and (p / "model.safetensors").is_file():
        return p
    final = p / "model" if (p / "model" / "model.safetensors").is_file() else None
    ckpt = _latest_checkpoint(p)
    if final is None and ckpt is None:
        raise CheckpointError(f"{p} exists but holds no model: expected config.json + model.safetensors, "
                              "a run directory with model/, or checkpoints/latest")
    s_final = _recorded_step(final) if final is not None else None
    s_ckpt = _recorded_step(ckpt) if ckpt is not None else None
    if final is not None and ckpt is not None and s_final is None:   # model/ of an older driftar: no step
        newer = (ckpt / "model.safetensors").stat().st_mtime > (final / "model.safetensors").stat().st_mtime
    else:
        newer = final is not None and ckpt is not None and (s_ckpt or 0) > (s_final or 0)
    if final is None or newer:
        chosen = ckpt
        why = f"checkpoint step {s_ckpt}" + (" (the run has no final model/ yet)" if final is None else
                                             f", newer than model/ (step {s_final}): the run went on after it")
    else:
        chosen, why = final, f"the final model (step {s_final})"
    if say is not None:
        say(f"loading {chosen}: {why}")
    return chosen


def load_model(ref: str, say: Callable[[str], None] | None = None, **overrides: Any) -> Any:
    """Load a GENERATOR bundle from a path or a registry name (``mar_tiny.digits`` loads zoo weights).
    ``say``: where notes go (which step of a run was loaded; an unverifiable file)."""
    from driftar_core.bundle import ModelBundle
    model_dir = find_model_dir(ref, say)
    if model_dir is not None:
        from driftar_core.bundle import load_bundle
        return load_bundle(model_dir, say=say, **overrides)
    from driftar_core.factory import create_model
    from driftar_core.plugins import registries
    from driftar_core.registry import split_model_name_tag
    _, tag = split_model_name_tag(ref)
    if not tag and not ref.replace("_", "").isalnum():
        raise FileNotFoundError(f"{ref} is neither an existing path nor a model name")
    cards = registries().cards
    if ref in cards.names() and cards.get(ref).kind != "generator":
        raise CheckpointError(f"{ref!r} is an {cards.get(ref).kind} (it scores images), not an image generator; "
                              "pick a generator: driftar zoo list")
    model = create_model(ref, **overrides)
    if not isinstance(model, ModelBundle):
        raise CheckpointError(f"{ref!r} is not an image generator ({type(model).__name__}); pick one from "
                              "driftar zoo list or driftar models")
    return model.eval()


def sampling_overrides(bundle: Any, **values: Any) -> dict[str, Any]:
    """The set values among num_iter / cfg / temperature, validated against the model's own config (e.g.
    MAR's num_iter <= L); a bad value raises ConfigError naming the key."""
    from driftar_core.config import validate
    set_values = {k: v for k, v in values.items() if v is not None}
    if set_values:
        data = bundle.config.model_dump()
        data["sampling"] = {**data["sampling"], **set_values}
        validate(type(bundle.config), data, where="model")
    return set_values
