"""The run directory: where a training run writes everything (rank 0 only; the process never chdirs).

    runs/<backbone>/<YYYYmmdd-HHMMSS>-<name>/
        config.json                 the resolved RunConfig; model.args holds the FULL model config
        env.json                    python/torch/numpy versions, platform, device, git sha, plugins
        metrics.csv                 step, loss, lr, grad_norm, it/s, objective metrics (appended)
        samples/step-XXXXXXX.png    EMA sample grids: one row per class, fixed seed
        checkpoints/step-XXXXXXX/   see driftar_core.train.checkpoint
        checkpoints/latest          name of the newest complete checkpoint
        model/                      the final EMA bundle (config.json, model.safetensors, README.md)

A resumed run keeps writing into the same directory; a config or environment that differs from the
saved one is recorded beside it (``config.resume-step-XXXXXXX.json``), never over it.
docs/layout.md "Runs" (timm's output dirs, LightningCLI's saved config, diffusers' resume).
"""
from __future__ import annotations

import csv
import io
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from driftar_core.bundle import atomic_write_text

CONFIG = "config.json"
ENV = "env.json"
METRICS = "metrics.csv"
BASE_COLUMNS = ("step", "loss", "lr", "grad_norm", "it/s")


def new_run_dir(runs_dir: str | Path, backbone: str, name: str, now: float | None = None) -> Path:
    """Create ``<runs_dir>/<backbone>/<YYYYmmdd-HHMMSS>-<name>/``; a same-second clash gets ``-2``, ``-3``..."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    root = Path(runs_dir) / backbone
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):
        path = root / (f"{stamp}-{name}" if i == 1 else f"{stamp}-{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a fresh run directory under {root}")


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str) + "\n"


def write_record(run_dir: Path, filename: str, record: dict[str, Any], step: int) -> Path:
    """Write ``filename`` once; on a resume with different content, write ``<stem>.resume-step-N.json`` beside it."""
    path = run_dir / filename
    if path.is_file():
        try:
            if json.loads(path.read_text()) == json.loads(_json(record)):
                return path
        except ValueError:
            pass
        path = run_dir / f"{path.stem}.resume-step-{step:07d}{path.suffix}"
    atomic_write_text(path, _json(record))
    return path


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


# -------------------------------------------------------------------------------------------------
# env.json
# -------------------------------------------------------------------------------------------------


def git_sha(where: Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of the driftar checkout (suffix ``-dirty`` with local changes); None without git."""
    where = where or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha or None


def _plugins() -> Any:
    try:
        from driftar_core.plugins import describe_plugins  # being written in parallel
    except (ImportError, AttributeError):
        return None
    try:
        return describe_plugins()
    except Exception as e:  # a plugin listing must never stop a run
        return f"unavailable: {type(e).__name__}: {e}"


def collect_env(device: torch.device, world_size: int, backend: str | None) -> dict[str, Any]:
    """Versions, platform and hardware of this run (one record, written by rank 0)."""
    try:
        from importlib.metadata import version
        driftar_version = version("driftar")
    except Exception:
        driftar_version = None
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "driftar": driftar_version, "platform": platform.platform(), "machine": platform.machine(),
        "device": str(device), "gpu": gpu, "cuda": torch.version.cuda, "world_size": world_size,
        "backend": backend, "torch_threads": torch.get_num_threads(), "git_sha": git_sha(),
        "argv": sys.argv, "plugins": _plugins(),
    }


# -------------------------------------------------------------------------------------------------
# metrics.csv
# -------------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(v) if not math.isfinite(v) else f"{v:.6g}"
    return str(v)


class MetricsLog:
    """Append-only CSV with a header; a new metric key rewrites the file once with the wider header."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        self.columns: list[str] = []
        if path.is_file():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
                self.columns = list(reader.fieldnames or [])
            if resume_step is not None:   # rows written after the checkpoint we resume from are replayed
                kept = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
                if len(kept) != len(rows):
                    self._rewrite(kept)

    def _rewrite(self, rows: Iterable[dict[str, Any]]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, restval="")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())

    def log(self, row: dict[str, Any]) -> None:
        row = {k: _fmt(v) for k, v in row.items()}
        new = [k for k in row if k not in self.columns]
        if new or not self.path.is_file():
            old_rows: list[dict[str, Any]] = []
            if self.path.is_file():
                with open(self.path, newline="") as f:
                    old_rows = list(csv.DictReader(f))
            self.columns += new
            self._rewrite(old_rows + [row])
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, restval="").writerow(row)
