"""The attempts of the sweep, as data: ``Attempt(name, category, setup, argv, expect, ...)``.

``setup(tmp, ctx)`` prepares the attempt's fresh temp dir (the command's cwd) and returns the paths
(relative to it) of files the user owns there; the runner snapshots them, plus a ``user/`` sentinel
tree, before and after (``data loss``). ``argv`` is the driftar command line (without ``driftar``),
or a function ``(tmp, ctx) -> argv``. ``expect``: ``"error"`` for bad input (success is a ``silent
wrong result`` unless ``oracle`` accepts the output: odd-but-valid values), ``"ok"`` for valid input.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from faults import checks

# ------------------------------------------------------------------------------------------------
# the data model
# ------------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    cache: Path                         # per-sweep cache: a trained run and an ONNX bundle
    zoo: Path                           # the installed zoo's models/ (read only: copytree it)
    seed: int = 0
    is_root: bool = False

    @property
    def runs_src(self) -> Path:         # a runs/ tree holding one tiny trained run
        return self.cache / "runs"

    @property
    def run_rel(self) -> str:           # that run, relative to an attempt's cwd after copy_run()
        return str(next((self.cache / "runs" / "mar").iterdir()).relative_to(self.cache))

    @property
    def bundle_src(self) -> Path:
        return self.cache / "bundle"


Setup = Callable[[Path, Ctx], "list[str] | None"]


@dataclass
class Attempt:
    name: str
    category: str
    setup: Setup | None
    argv: list[str] | Callable[[Path, Ctx], list[str]]
    expect: str                                         # "error" | "ok"
    oracle: Callable[[Path, Any], Any] | None = None    # checks an exit-0 result (checks.py)
    next_start: list[str] | Callable[[Path, Ctx], list[str]] | None = None  # None: the command's default
    kill_after: tuple[float, float] | None = None      # SIGKILL after a seeded delay in this range
    after_kill: Callable[[Path, Any], Any] | None = None  # check right after the kill (torn outputs)
    concurrent: int = 1                                 # run argv this many times at once
    lock_pid: bool = False                              # concurrent: the loser must name the holder's PID
    needs: tuple[str, ...] = ()                         # "run" / "bundle": cached artifacts
    timeout: float = 90.0
    skip: Callable[[Ctx], "str | None"] | None = None


def resolve_argv(a: Attempt, tmp: Path, ctx: Ctx) -> list[str]:
    return list(a.argv(tmp, ctx) if callable(a.argv) else a.argv)


# ------------------------------------------------------------------------------------------------
# command lines
# ------------------------------------------------------------------------------------------------


def sets(**kv: Any) -> list[str]:
    out = []
    for k, v in kv.items():
        out += ["--set", f"{k.replace('__', '.')}={json.dumps(v) if not isinstance(v, str) else v}"]
    return out


SAMPLE = ["sample", "-c", "mar_tiny_drift.digits", "-n", "2", "--batch-size", "2", "--out", "g.png"]
SPEC = ["sample", "-c", "nextstep1_tiny_drift.digits", "-n", "2", "--batch-size", "1", "--out", "g.png"]
TRAIN = ["train", "--backbone", "mar", "--recipe", "baseline",
         *sets(train__steps=2, train__sample_every=0, train__ckpt_every=1, train__log_every=1,
               train__grid_per_class=1, train__grid_classes=[0], train__runs_dir="runs", train__threads=1,
               train__device="cpu", data__batch_size=8)]
RUN = ["run", "--bundle", "B", "-n", "2", "--out", "g.png"]
EVAL = ["eval", "-m", "mar_tiny_drift.digits", "--num-samples", "4", "--seeds", "1", "--json", "r.json"]
BENCH = ["bench", "-m", "mar_tiny_drift.digits", "--no-quality", "--repeats", "1", "--warmup", "0",
         "--burn-in", "0", "--json", "b.json"]
EXPORT = ["export", "-m", "mar_tiny_drift.digits", "-t", "onnx", "-o", "B"]
VALUES = ["0", "-1", "-5", "nan", "inf", "1e30", "abc", ""]   # every numeric CLI option of sample
SHORT = ["0", "-1", "nan", "1e30", "abc"]        # slower commands (train/eval/bench/export start torch): one of each kind


def with_opt(base: list[str], opt: str, value: str) -> list[str]:
    """``base`` with ``opt value`` replacing an existing ``opt`` (or appended)."""
    out = list(base)
    if opt in out:
        out[out.index(opt) + 1] = value
    else:
        out += [opt, value]
    return out


def swap(base: list[str], old: str, new: str) -> list[str]:
    return [new if x == old else x for x in base]


def vname(v: str) -> str:
    return {"": "empty", "-1": "neg1", "-5": "neg5"}.get(v, v.replace(".", "p").replace("-", "neg"))


def default_next_start(argv: list[str], ctx: Ctx) -> list[str] | None:
    """The normal invocation of the same command after an attempt (it may clean what the attempt left)."""
    def out_of(flags: tuple[str, ...], default: str) -> str:
        for i, x in enumerate(argv[:-1]):
            if x in flags:
                return argv[i + 1]
        return default
    cmd = argv[0] if argv else ""
    if cmd == "sample":
        return with_opt(SAMPLE, "--out", out_of(("--out",), "g.png"))
    if cmd == "run":
        return ["run", "--bundle", str(ctx.bundle_src), "-n", "2", "--out", out_of(("--out",), "g.png")]
    if cmd == "export":
        return with_opt(EXPORT, "-o", out_of(("-o", "--out"), "B"))
    if cmd == "train":
        return list(TRAIN)
    if cmd == "eval":
        return with_opt(EVAL, "--json", out_of(("--json",), "r.json"))
    if cmd == "bench":
        return with_opt(BENCH, "--json", out_of(("--json",), "b.json"))
    return None


# ------------------------------------------------------------------------------------------------
# artifact corruption
# ------------------------------------------------------------------------------------------------


def copy_model(name: str, dest: str = "M") -> Setup:
    def setup(tmp: Path, ctx: Ctx) -> list[str]:
        shutil.copytree(ctx.zoo / name, tmp / dest)
        return [dest]
    return setup


def copy_run(tmp: Path, ctx: Ctx) -> list[str]:
    """The cached run; not precious as a whole: a resume rewrites ``latest`` and prunes old steps."""
    shutil.copytree(ctx.runs_src, tmp / "runs")
    return []


def copy_bundle(tmp: Path, ctx: Ctx) -> list[str]:
    shutil.copytree(ctx.bundle_src, tmp / "B")
    return ["B"]


def flip(path: Path, offset: int | None = None, n: int = 400) -> None:
    """Invert ``n`` bytes at ``offset`` (default: the middle of the file)."""
    data = bytearray(path.read_bytes())
    off = len(data) // 2 if offset is None else offset
    for i in range(off, min(off + n, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, size: int | float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * size) if isinstance(size, float) else size])


def edit_json(path: Path, fn: Callable[[Any], Any]) -> None:
    d = json.loads(path.read_text())
    d = fn(d) or d
    path.write_text(json.dumps(d, indent=1))


def _sha(path: Path) -> str:
    return checks._digest(path)


def rewrite_records(folder: Path, old_sha: str, new_sha: str, new_size: int) -> None:
    """Update every recorded sha256 (and its sibling size) of a rewritten file in ``folder``'s JSON files,
    so that only a content check (NaN, missing tensors) can catch the change."""
    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            hit = any(v == old_sha for v in x.values())
            out = {k: (new_sha if v == old_sha else walk(v)) for k, v in x.items()}
            if hit and "size" in out:
                out["size"] = new_size
            return out
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x
    for j in folder.glob("*.json"):
        try:
            d = json.loads(j.read_text())
        except ValueError:
            continue
        if old_sha in j.read_text():
            j.write_text(json.dumps(walk(d), indent=1))


def rewrite_weights(path: Path, fn: Callable[[dict], dict]) -> None:
    """Load a safetensors file, change its tensors with ``fn``, save it and fix the recorded hashes."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file
    old = _sha(path)
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
    save_file(fn(load_file(str(path))), str(path), metadata=meta)
    rewrite_records(path.parent, old, _sha(path), path.stat().st_size)


def nan_all(t: dict) -> dict:
    import numpy as np
    return {k: (np.full_like(v, np.nan) if v.dtype.kind == "f" else v) for k, v in t.items()}


def drop_one(t: dict) -> dict:
    return dict(list(t.items())[1:])


def wrong_shape(t: dict) -> dict:
    import numpy as np
    k = next(k for k, v in t.items() if v.ndim >= 1 and v.dtype.kind == "f")
    return {**t, k: np.zeros((t[k].shape[0] + 1, *t[k].shape[1:]), t[k].dtype)}


def extra_tensor(t: dict) -> dict:
    import numpy as np
    return {**t, "bogus.weight": np.zeros(3, np.float32)}


def then(setup: Setup, *mutations: Callable[[Path], None]) -> Setup:
    """``setup`` followed by mutations of the temp dir; the mutated files stay precious only if they
    were (a corrupted file is the user's too: deleting it silently is data loss)."""
    def s(tmp: Path, ctx: Ctx) -> list[str]:
        keep = setup(tmp, ctx) or []
        for m in mutations:
            m(tmp)
        return keep
    return s


def on(rel: str, fn: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda tmp: fn(tmp / rel)


def write(rel: str, text: str | bytes) -> Callable[[Path], None]:
    def w(tmp: Path) -> None:
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return w


def delete(rel: str) -> Callable[[Path], None]:
    def d(tmp: Path) -> None:
        p = tmp / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return d


def user_files(*rels: str) -> Setup:
    """Plain user files (precious), e.g. a foreign manifest.json in an --out directory."""
    def s(tmp: Path, ctx: Ctx) -> list[str]:
        for rel in rels:
            write(rel, f"user data: {rel}\n")(tmp)
        return list(rels)
    return s


def make_png(rel: str) -> Callable[[Path], None]:
    def m(tmp: Path) -> None:
        import numpy as np
        from PIL import Image
        Image.fromarray((np.arange(256, dtype=np.uint8).reshape(16, 16))).save(tmp / rel)
    return m


def all_cases() -> list[Attempt]:
    from faults.cases_artifacts import (bundle_cases, kill_and_concurrency_cases, model_dir_cases,
                                        run_dir_cases)
    from faults.cases_commands import eval_bench_cases, export_cases, run_cases, sample_cases, train_cases
    cases = (sample_cases() + run_cases() + eval_bench_cases() + export_cases() + train_cases() + model_dir_cases()
             + run_dir_cases() + bundle_cases() + kill_and_concurrency_cases())
    names = [a.name for a in cases]
    dupes = {n for n in names if names.count(n) > 1}
    assert not dupes, f"duplicate attempt names: {sorted(dupes)}"
    return cases
