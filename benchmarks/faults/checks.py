"""File-system checks of an attempt: sentinel snapshots, leftover temporaries, and output oracles.

An oracle takes the attempt's temp dir (and its results) and returns None when the output is right,
else a reason (str) or ``(class, reason)`` to force a class (``data loss`` for duplicate metrics rows).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable

Verdict = "str | tuple[str, str] | None"
Oracle = Callable[[Path, Any], Any]


# ------------------------------------------------------------------------------------------------
# snapshots and leftovers
# ------------------------------------------------------------------------------------------------


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def snapshot(root: Path, paths: list[str]) -> dict[str, str]:
    """{relative file path: sha256} of every file at or under ``paths`` (relative to ``root``)."""
    out: dict[str, str] = {}
    for rel in paths:
        p = root / rel
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
        for f in files:
            out[str(f.relative_to(root))] = _digest(f)
    return out


def lost_files(root: Path, before: dict[str, str]) -> list[str]:
    """Files of ``before`` that are gone or whose bytes changed."""
    lost = []
    for rel, digest in before.items():
        p = root / rel
        if not p.is_file():
            lost.append(f"{rel} (gone)")
        elif _digest(p) != digest:
            lost.append(f"{rel} (changed)")
    return lost


def is_temporary(name: str) -> bool:
    """A hidden temporary driftar makes: ``.NAME.tmp-...`` or ``.NAME.old-...``."""
    return name.startswith(".") and (".tmp-" in name or ".old-" in name)


def temporaries(root: Path) -> list[str]:
    found = []
    for p in root.rglob("*"):
        if is_temporary(p.name) and not any(is_temporary(a.name) for a in p.relative_to(root).parents if a.name):
            found.append(str(p.relative_to(root)))
    return sorted(found)


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ------------------------------------------------------------------------------------------------
# output checks (each returns None when fine, else the reason)
# ------------------------------------------------------------------------------------------------


def check_images(path: Path) -> str | None:
    """A PNG grid or an NPZ of images: readable, finite, not constant."""
    import numpy as np
    if not path.is_file():
        return f"{path.name} was not written"
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path) as z:
                images, labels = z["images"], z["labels"]
            if len(images) != len(labels) or len(images) == 0:
                return f"{path.name}: {len(images)} images, {len(labels)} labels"
        else:
            from PIL import Image
            with Image.open(path) as im:
                images = np.asarray(im.convert("L"), dtype=np.float64)
    except Exception as e:  # noqa: BLE001 (any failure to read is the finding)
        return f"{path.name} unreadable: {type(e).__name__}: {e}"
    a = np.asarray(images, dtype=np.float64)
    if not np.isfinite(a).all():
        return f"{path.name} has non-finite pixels"
    if a.std() == 0:
        return f"{path.name} is constant (all pixels {a.flat[0]:g})"
    return None


def check_safetensors_finite(path: Path) -> str | None:
    import numpy as np
    from safetensors.numpy import load_file
    try:
        tensors = load_file(str(path))
    except Exception as e:  # noqa: BLE001
        return f"{path} unreadable: {e}"
    bad = [k for k, v in tensors.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
    return f"{path.name}: non-finite weights in {bad[:3]}" if bad else None


def run_dirs(root: Path, runs: str = "runs") -> list[Path]:
    base = root / runs
    return sorted(p for p in base.glob("*/*") if p.is_dir() and not p.name.startswith(".")) if base.is_dir() else []


def metrics_steps(run: Path) -> list[int]:
    path = run / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [int(float(r["step"])) for r in csv.DictReader(f) if r.get("step") not in (None, "")]


def check_run(run: Path, expected_step: int | None = None) -> Any:
    """A trained run: a final model with finite weights, a step recorded, no duplicate metrics rows."""
    latest = run / "checkpoints" / "latest"
    step = None
    if latest.is_file():
        state = run / "checkpoints" / latest.read_text().strip() / "state.json"
        try:
            step = json.loads(state.read_text())["step"]
        except Exception as e:  # noqa: BLE001
            return f"{run.name}: latest checkpoint unreadable: {e}"
    model = run / "model" / "model.safetensors"
    if not model.is_file():
        return f"{run.name}: no model/model.safetensors"
    if step is None:
        try:
            step = json.loads((run / "model" / "config.json").read_text()).get("step")
        except Exception:  # noqa: BLE001
            step = None
    if step is None:
        return f"{run.name}: no step recorded (no checkpoint, none in model/config.json)"
    if expected_step is not None and step != expected_step:
        return f"{run.name}: recorded step {step}, expected {expected_step}"
    bad = check_safetensors_finite(model)
    if bad:
        return bad
    steps = metrics_steps(run)
    dupes = sorted({s for s in steps if steps.count(s) > 1})
    if dupes:
        return ("data loss", f"{run.name}/metrics.csv: duplicate rows for steps {dupes[:5]}")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        return f"{run.name}/metrics.csv: steps not increasing"
    return None


def check_bundle(path: Path) -> str | None:
    manifest = path / "manifest.json"
    if not manifest.is_file():
        return f"{path.name}: no manifest.json"
    try:
        m = json.loads(manifest.read_text())
        for g in m["graphs"].values():
            if not (path / g["file"]).is_file():
                return f"{path.name}: graph {g['file']} missing"
    except Exception as e:  # noqa: BLE001
        return f"{path.name}/manifest.json unreadable: {e}"
    return None


def check_json_finite(path: Path) -> str | None:
    if not path.is_file():
        return f"{path.name} was not written"
    try:
        data = json.loads(path.read_text(), parse_constant=lambda c: float(c))
    except Exception as e:  # noqa: BLE001
        return f"{path.name} unreadable: {e}"
    bad: list[str] = []

    def walk(x: Any, where: str) -> None:
        if isinstance(x, float) and not math.isfinite(x):
            bad.append(where)
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{where}.{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{where}[{i}]")
    walk(data, "")
    return f"{path.name}: non-finite values at {bad[:3]}" if bad else None


# ------------------------------------------------------------------------------------------------
# oracle factories
# ------------------------------------------------------------------------------------------------


def images_ok(out: str = "g.png") -> Oracle:
    return lambda tmp, res: check_images(tmp / out)


def run_ok(expected_step: int | None = None, runs: str = "runs", count: int | None = None) -> Oracle:
    def oracle(tmp: Path, res: Any) -> Any:
        dirs = run_dirs(tmp, runs)
        if not dirs:
            return "no run directory written"
        if count is not None and len(dirs) != count:
            return ("data loss", f"{len(dirs)} run directories for {count} successful runs")
        for d in dirs if count else dirs[-1:]:
            bad = check_run(d, expected_step)
            if bad:
                return bad
        return None
    return oracle


def run_at(rel: str, expected_step: int | None = None) -> Oracle:
    return lambda tmp, res: check_run(tmp / rel, expected_step)


def bundle_ok(out: str = "B") -> Oracle:
    return lambda tmp, res: check_bundle(tmp / out)


def json_ok(out: str) -> Oracle:
    return lambda tmp, res: check_json_finite(tmp / out)


def never(why: str) -> Oracle:
    """For artifacts that must never load: any exit-0 result is wrong."""
    return lambda tmp, res: why


def exists(rel: str) -> Oracle:
    return lambda tmp, res: None if (tmp / rel).exists() else f"{rel} was not written"


def all_of(*oracles: Oracle) -> Oracle:
    def oracle(tmp: Path, res: Any) -> Any:
        for o in oracles:
            v = o(tmp, res)
            if v:
                return v
        return None
    return oracle
