"""Training checkpoints without pickle: safetensors for tensors, JSON for everything else.

One checkpoint is one directory, ``<run>/checkpoints/step-XXXXXXX/``:

    model.safetensors, config.json, README.md   the EMA bundle (``driftar_core.bundle.load_bundle`` loads it)
    raw.safetensors                             the live (non-EMA) weights
    state.safetensors                           tensors of the training state (Adam moments, torch RNG states)
    state.json                                  the rest (step, optimizer groups, scheduler, python/numpy RNG
                                                per rank) + size and sha256 of every file; written LAST

A checkpoint is written into a hidden temporary directory and renamed into place, then
``checkpoints/latest`` (a text file naming the step directory) is replaced atomically, so a crash
never leaves a half-written checkpoint behind the pointer. Loading verifies every file against the
manifest and fails with a :class:`CheckpointError` that names the file before anything is built.
"""
from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from driftar_core.errors import CheckpointError
from driftar_core.files import (IntegrityError, atomic_write_text, check_digest, file_record, make_temp_dir,
                               swap_dir, verify_records, with_digest)
from driftar_core.weights import load_safetensors, save_safetensors

FORMAT_VERSION = 1
LATEST = "latest"
STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"
RAW_WEIGHTS = "raw.safetensors"
EMA_WEIGHTS = "model.safetensors"


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


# -------------------------------------------------------------------------------------------------
# Nested state <-> (JSON, tensors)
# -------------------------------------------------------------------------------------------------


def encode_state(obj: Any) -> tuple[Any, dict[str, Tensor]]:
    """Split a nested state (dicts, lists, tuples, tensors, numpy arrays, scalars) into JSON + tensors.

    Tensors become ``{"__tensor__": key}``, tuples ``{"__tuple__": [...]}``, dicts with non-string
    keys (optimizer state is keyed by int) ``{"__items__": [[k, v], ...]}``, numpy arrays
    ``{"__ndarray__": list, "dtype": str}``. :func:`decode_state` inverts it exactly.
    """
    tensors: dict[str, Tensor] = {}

    def enc(x: Any, path: str) -> Any:
        if isinstance(x, Tensor):
            tensors[path] = x.detach().cpu()
            return {"__tensor__": path}
        if isinstance(x, np.ndarray):
            return {"__ndarray__": x.tolist(), "dtype": str(x.dtype)}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, tuple):
            return {"__tuple__": [enc(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [enc(v, f"{path}.{i}") for i, v in enumerate(x)]
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {k: enc(v, f"{path}.{k}") for k, v in x.items()}
            return {"__items__": [[enc(k, f"{path}.k{i}"), enc(v, f"{path}.{k}")]
                                  for i, (k, v) in enumerate(x.items())]}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"cannot store {type(x).__name__} at {path!r} in a checkpoint")

    return enc(obj, "s"), tensors


def decode_state(obj: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of :func:`encode_state`."""
    if isinstance(obj, list):
        return [decode_state(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            key = obj["__tensor__"]
            if key not in tensors:
                raise CheckpointError(f"{STATE_TENSORS} lacks tensor {key!r} named in {STATE_JSON}")
            return tensors[key]
        if "__tuple__" in obj:
            return tuple(decode_state(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {decode_state(k, tensors): decode_state(v, tensors) for k, v in obj["__items__"]}
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
        return {k: decode_state(v, tensors) for k, v in obj.items()}
    return obj


# -------------------------------------------------------------------------------------------------
# RNG state of one process
# -------------------------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """Python, numpy, torch CPU and (if initialised) CUDA generator states of this process."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(), "cuda": list(cuda)}


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -------------------------------------------------------------------------------------------------
# Save
# -------------------------------------------------------------------------------------------------


def save_checkpoint(checkpoints: Path, step: int, *, ema_bundle: Any, raw_weights: dict[str, Tensor],
                    train_state: dict[str, Any]) -> Path:
    """Write ``checkpoints/step-XXXXXXX/`` atomically and point ``checkpoints/latest`` at it."""
    checkpoints.mkdir(parents=True, exist_ok=True)
    name = step_dir_name(step)
    tmp = make_temp_dir(checkpoints / name)                        # .step-N.tmp-PID-*: removed if we die
    try:
        ema_bundle.save(tmp, step=step)                            # model.safetensors, config.json, README.md
        save_safetensors(raw_weights, tmp / RAW_WEIGHTS)
        state_json, state_tensors = encode_state(train_state)
        save_safetensors(state_tensors, tmp / STATE_TENSORS)
        files = {p.name: file_record(p) for p in sorted(tmp.iterdir())}
        atomic_write_text(tmp / STATE_JSON, json.dumps(with_digest(
            {"format": FORMAT_VERSION, "step": step, "files": files, "state": state_json}), indent=1))
        swap_dir(tmp, checkpoints / name)                          # re-saving a step after an explicit resume
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(checkpoints / LATEST, name + "\n")
    return checkpoints / name


# -------------------------------------------------------------------------------------------------
# Find and load
# -------------------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A verified checkpoint read into memory."""

    path: Path                      # the step directory
    step: int
    raw_weights: dict[str, Tensor]
    ema_weights: dict[str, Tensor]
    state: dict[str, Any]           # what the trainer passed as train_state

    @property
    def run_dir(self) -> Path:
        return self.path.parent.parent


def latest_step_dir(checkpoints: Path) -> Path | None:
    """The step directory ``checkpoints/latest`` names, or None (no pointer, or one that does not name a
    ``step-XXXXXXX`` directory there: damaged or edited)."""
    pointer = checkpoints / LATEST
    try:
        name = pointer.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    target = checkpoints / name
    return target if re.fullmatch(r"step-\d{7}", name) and target.is_dir() else None


def _follow_latest(checkpoints: Path) -> Path:
    target = latest_step_dir(checkpoints)
    if target is None:
        pointer = checkpoints / LATEST
        name = pointer.read_bytes()[:40].decode(errors="replace").strip() if pointer.is_file() else ""
        raise CheckpointError(f"{pointer} points at {name!r}, which is not a checkpoint directory; "
                              f"pass a step directory under {checkpoints} explicitly")
    return target


def run_dirs(root: Path, name: str) -> list[Path]:
    """Run directories ``<stamp>-<name>`` and same-second ``<stamp>-<name>-N`` under ``root``, oldest first."""
    pattern = re.compile(rf"^(\d{{8}}-\d{{6}})-{re.escape(name)}(?:-(\d+))?$")
    found = []
    for p in root.glob(f"*-{name}*") if root.is_dir() else ():
        m = pattern.match(p.name)
        if m and p.is_dir():
            found.append(((m[1], int(m[2] or 1)), p))
    return [p for _, p in sorted(found)]


def prune_checkpoints(checkpoints: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest step directories (never the one ``latest`` names); 0 keeps all."""
    if keep <= 0 or not checkpoints.is_dir():
        return []
    steps = sorted(p for p in checkpoints.iterdir() if p.is_dir() and re.fullmatch(r"step-\d{7}", p.name))
    latest = latest_step_dir(checkpoints)
    doomed = [p for p in steps[:-keep] if latest is None or p.name != latest.name]
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed


def resolve_resume(resume: str, runs_dir: str | Path, backbone: str, name: str) -> Path:
    """``resume`` -> a step directory.

    ``"latest"``: the newest run ``<runs_dir>/<backbone>/*-<name>`` that has ``checkpoints/latest``.
    A path: a step directory, a run directory or its ``checkpoints/`` directory (its ``latest``).
    """
    if resume == "latest":
        root = Path(runs_dir) / backbone
        runs = [p for p in run_dirs(root, name) if (p / "checkpoints" / LATEST).is_file()]
        if not runs:
            raise CheckpointError(f"--resume latest: no run named '*-{name}' with a checkpoints/{LATEST} "
                                  f"pointer under {root}; pass a run or checkpoint directory instead")
        return _follow_latest(runs[-1] / "checkpoints")
    path = Path(resume)
    if not path.exists():
        raise CheckpointError(f"--resume {resume}: no such file or directory")
    if (path / STATE_JSON).is_file() or path.name.startswith("step-"):
        return path
    for checkpoints in (path / "checkpoints", path):
        if (checkpoints / LATEST).is_file():
            return _follow_latest(checkpoints)
    raise CheckpointError(f"--resume {resume}: not a run directory (no checkpoints/{LATEST}) "
                          f"and not a checkpoint directory (no {STATE_JSON})")


def verify_checkpoint_files(path: str | Path) -> tuple[int, Any]:
    """Check every file of a step directory against ``state.json``; returns (step, the JSON state).
    Any missing, truncated or altered file is a :class:`CheckpointError` naming it."""
    path = Path(path)
    meta_path = path / STATE_JSON
    if not meta_path.is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint: {STATE_JSON} is missing "
                              "(the save was interrupted, or this is not a checkpoint directory)")
    try:
        meta = json.loads(meta_path.read_text())
        files, step, state_json = meta["files"], int(meta["step"]), meta["state"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{meta_path} is corrupt ({type(e).__name__}: {e})") from e
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path} has checkpoint format {meta.get('format')!r}; "
                              f"this driftar reads format {FORMAT_VERSION}")
    for fname in (EMA_WEIGHTS, RAW_WEIGHTS, STATE_TENSORS):
        if fname not in files:
            raise CheckpointError(f"{meta_path} does not list {fname}; the checkpoint is incomplete")
    try:
        check_digest(meta, f"{meta_path}")
        verify_records(path, files, f"{meta_path}")
    except (IntegrityError, AttributeError, TypeError) as e:
        raise CheckpointError(str(e)) from None
    if path.name.startswith("step-") and path.name != step_dir_name(step):
        raise CheckpointError(f"{meta_path} records step {step} but its directory is {path.name}; "
                              "the checkpoint was edited or moved: resume from another one")
    return step, state_json


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a step directory; any missing, truncated or altered file is a CheckpointError."""
    path = Path(path)
    step, state_json = verify_checkpoint_files(path)
    state = decode_state(state_json, load_safetensors(path / STATE_TENSORS))
    return Checkpoint(path=path, step=step, raw_weights=load_safetensors(path / RAW_WEIGHTS),
                      ema_weights=load_safetensors(path / EMA_WEIGHTS), state=state)
