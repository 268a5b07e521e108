"""Run attempts (fresh temp dir each, sentinel snapshots, next start), classify them, report."""
from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faults import checks
from faults.cases import TRAIN, Attempt, Ctx, all_cases, default_next_start, resolve_argv
from faults.classify import (CLASSES, CLEAR, DATA_LOSS, DEFECTS, OK, SILENT, classify,
                             first_line, is_clear_message)

OUT_FLAGS = ("--out", "-o", "--json", "--markdown", "--plot")


def driftar_command() -> list[str]:
    """``python -m driftar_core.cli`` when the package has a ``__main__``, else the ``driftar`` script."""
    if importlib.util.find_spec("driftar_core.cli.__main__") is not None:
        return [sys.executable, "-m", "driftar_core.cli"]
    exe = shutil.which("driftar")
    if exe:
        return [exe]
    return [sys.executable, "-c", "import sys; from driftar_core.cli import main; sys.exit(main())"]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
       "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}


@dataclass
class Result:
    argv: list[str]
    exit_code: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    killed: bool = False          # by the sweep's kill (not a timeout)


def _start(argv: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(driftar_command() + argv, cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, errors="replace",
                            start_new_session=True)


def _finish(p: subprocess.Popen, argv: list[str], t0: float, timeout: float, kill_at: float | None = None) -> Result:
    """Wait for ``p``; SIGKILL its process group at ``kill_at`` (the sweep's kill) or ``timeout`` (a hang)."""
    deadline = t0 + timeout
    killed = timed_out = False
    try:
        limit = (kill_at if kill_at is not None else deadline) - time.monotonic()
        out, err = p.communicate(timeout=max(limit, 0.01))
    except subprocess.TimeoutExpired:
        killed, timed_out = kill_at is not None, kill_at is None
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = p.communicate()
    return Result(argv, p.returncode, out, err, time.monotonic() - t0, timed_out, killed)


def execute(argv: list[str], cwd: Path, timeout: float, kill_after: float | None = None) -> Result:
    t0 = time.monotonic()
    p = _start(argv, cwd)
    return _finish(p, argv, t0, timeout, None if kill_after is None else t0 + kill_after)


def execute_concurrently(argv: list[str], cwd: Path, timeout: float, n: int) -> list[Result]:
    t0 = time.monotonic()
    procs = [_start(argv, cwd) for _ in range(n)]
    return [_finish(p, argv, t0, timeout) for p in procs]


# ------------------------------------------------------------------------------------------------
# one attempt
# ------------------------------------------------------------------------------------------------


@dataclass
class Record:
    name: str
    category: str
    expect: str
    outcome: str
    seconds: float
    exit_code: int | None = None
    first_line: str = ""
    notes: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)


def _outputs(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, x in enumerate(argv[:-1]) if x in OUT_FLAGS and argv[i + 1]]


def _partial_outputs(tmp: Path, argv: list[str], before: set[str], before_out: dict[str, str]) -> list[str]:
    """Outputs a failed (or killed) attempt left half-made: a new or changed output file that does not
    read back, a new export directory without its manifest, a new run directory that holds neither a
    checkpoint nor a final model."""
    found = []
    for rel in _outputs(argv):
        p = tmp / rel
        if argv[0] == "export":
            if p.is_dir() and rel not in before and checks.check_bundle(p):
                found.append(f"{rel}/ (a partial bundle: {checks.check_bundle(p)})")
            continue
        if not p.is_file() or before_out.get(rel) == checks.snapshot(tmp, [rel]).get(rel):
            continue
        bad = checks.check_images(p) if p.suffix.lower() in (".png", ".npz") else \
            checks.check_json_finite(p) if p.suffix.lower() == ".json" else None
        if bad:
            found.append(f"{rel} (partial: {bad})")
    if argv[0] == "train":
        for run in checks.run_dirs(tmp):
            rel = str(run.relative_to(tmp))
            if rel not in before and not (run / "checkpoints" / "latest").is_file() and not (run / "model").is_dir():
                found.append(f"{rel}/ (a run directory with neither a checkpoint nor a model)")
    return found


def _verdict(v: Any, notes: list[str], lost: list[str]) -> str | None:
    """An oracle's verdict -> the oracle failure (str) or None; ("data loss", why) goes to ``lost``."""
    if v is None:
        return None
    if isinstance(v, tuple):
        cls, why = v
        if cls == DATA_LOSS:
            lost.append(why)
            return None
        return why
    return str(v)


def _lock_message_names_pid(stderr: str) -> bool:
    import re
    return bool(re.search(r"\b(?:pid|PID|process)\s*[:=#]?\s*\d+", stderr))


def run_attempt(a: Attempt, ctx: Ctx, workdir: Path, keep: bool = False) -> Record:
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f"{a.name.replace('/', '_')[:60]}-", dir=workdir))
    notes: list[str] = []
    try:
        # the user's files: a sentinel tree in every attempt, plus what the case declares
        checks_user = {"user/notes.txt": b"my notes\n", "user/nested/data.bin": bytes(range(256)) * 4}
        for rel, data in checks_user.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        precious = ["user"] + list((a.setup(tmp, ctx) if a.setup else None) or [])
        argv = resolve_argv(a, tmp, ctx)
        before_snap = checks.snapshot(tmp, precious)
        before_list = checks.listing(tmp)
        before_out = checks.snapshot(tmp, _outputs(argv))
        lost: list[str] = []
        oracle_failure = None

        if a.kill_after is not None:
            rng = random.Random(zlib.crc32(f"{ctx.seed}:{a.name}".encode()))
            delay = rng.uniform(*a.kill_after)
            first = execute(argv, tmp, a.timeout, kill_after=delay)
            notes.append(f"killed after {delay:.1f}s" if first.killed else
                         f"finished (exit {first.exit_code}) before the kill at {delay:.1f}s")
            if first.timed_out:
                return Record(a.name, a.category, a.expect, "hang", time.monotonic() - t0, None, "", notes, argv)
            if a.after_kill:
                oracle_failure = _verdict(a.after_kill(tmp, first), notes, lost)
            left = checks.temporaries(tmp) + _partial_outputs(tmp, argv, before_list, before_out)
            if left:
                notes.append(f"after the kill: {', '.join(left[:4])}")
            # data loss is what the KILL did: the next start is the user re-running the command, which may
            # rightly replace its own earlier output (an export over its bundle), so it is judged before it
            lost += checks.lost_files(tmp, before_snap)
            before_snap = checks.snapshot(tmp, precious)
            nxt = a.next_start(tmp, ctx) if callable(a.next_start) else a.next_start
            res = execute(nxt, tmp, a.timeout)
            notes.append(f"next start: {' '.join(nxt[:2])} ... exit {res.exit_code}")
            if res.exit_code == 0 and a.oracle and oracle_failure is None:
                oracle_failure = _verdict(a.oracle(tmp, res), notes, lost)
            leftovers = checks.temporaries(tmp)
            results = [res]
        elif a.concurrent > 1:
            results = execute_concurrently(argv, tmp, a.timeout, a.concurrent)
            res = next((r for r in results if r.timed_out), None) or \
                next((r for r in results if r.exit_code != 0 and "Traceback" in r.stderr), None) or \
                next((r for r in results if r.exit_code != 0), None) or results[0]
            winners = [r for r in results if r.exit_code == 0]
            losers = [r for r in results if r.exit_code != 0]
            notes.append(f"{len(winners)} of {len(results)} succeeded")
            if winners and a.oracle:
                oracle_failure = _verdict(a.oracle(tmp, winners[0]), notes, lost)
            if winners and losers and all(is_clear_message(r.stderr) for r in losers) and not res.timed_out:
                if a.lock_pid and not all(_lock_message_names_pid(r.stderr) for r in losers):
                    notes.append("the refused writer's message does not name the PID holding the lock")
                    res = Result(argv, 1, "", "(lock message without the holder's PID)", res.seconds)
                else:
                    res = winners[0]       # one writer refused cleanly: the outcome is the winner's
            leftovers = checks.temporaries(tmp)
        else:
            res = execute(argv, tmp, a.timeout)
            results = [res]
            if res.exit_code == 0 and a.oracle:
                oracle_failure = _verdict(a.oracle(tmp, res), notes, lost)
            leftovers = checks.temporaries(tmp)
            if res.exit_code != 0 and not res.timed_out:
                leftovers += _partial_outputs(tmp, argv, before_list, before_out)
            if leftovers:
                # the next normal start of the same command may clean up what the attempt left
                nxt = a.next_start(tmp, ctx) if callable(a.next_start) else a.next_start or default_next_start(argv, ctx)
                if nxt:
                    before2 = checks.listing(tmp)
                    res2 = execute(nxt, tmp, a.timeout)
                    notes.append(f"after the attempt: {', '.join(leftovers[:4])}; next start exit {res2.exit_code}")
                    leftovers = [x for x in checks.temporaries(tmp)] + \
                        [x for x in _partial_outputs(tmp, argv, before_list, before_out) if x.split(" ")[0].rstrip("/") in before2]
        lost += checks.lost_files(tmp, before_snap)
        timed_out = any(r.timed_out for r in results)
        outcome = classify(res.exit_code, res.stderr, a.expect, timed_out=timed_out,
                           has_oracle=a.oracle is not None, oracle_failure=oracle_failure, lost=lost,
                           leftovers=leftovers)
        if oracle_failure:
            notes.append(f"oracle: {oracle_failure}")
        if lost:
            notes.append(f"lost: {', '.join(lost[:4])}")
        if leftovers and outcome not in (OK, CLEAR):
            notes.append(f"left: {', '.join(leftovers[:4])}")
        if timed_out:
            notes.append(f"no exit within {a.timeout:.0f}s")
        if outcome == CLEAR and a.expect == "ok":
            notes.append("a valid input was refused")
        if outcome == SILENT and a.expect == "error" and not oracle_failure:
            notes.append("exit 0 for a bad input")
        line = first_line(res.stderr) or (res.stdout.strip().splitlines() or [""])[-1]
        return Record(a.name, a.category, a.expect, outcome, round(time.monotonic() - t0, 1), res.exit_code,
                      line[:300], notes, argv)
    except Exception as e:  # noqa: BLE001 (a bug of the sweep itself must not end the sweep)
        import traceback
        return Record(a.name, a.category, a.expect, "sweep error", round(time.monotonic() - t0, 1), None,
                      f"{type(e).__name__}: {e}", [traceback.format_exc(limit=3)[-600:]], [])
    finally:
        if not keep:
            for p in tmp.rglob("*"):          # chmod 0500 dirs would stop rmtree
                if p.is_dir() and not p.is_symlink():
                    try:
                        p.chmod(0o700)
                    except OSError:
                        pass
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# the cache (one trained run, one ONNX bundle per sweep)
# ------------------------------------------------------------------------------------------------


def prepare_cache(ctx: Ctx, needs: set[str]) -> dict[str, str]:
    """Train the tiny run and export the bundle the selected attempts copy; {need: error} for failures."""
    errors: dict[str, str] = {}

    def build(need: str) -> None:
        t0 = time.monotonic()
        if need == "run":
            res = execute(list(TRAIN), ctx.cache, 300)
            ok = res.exit_code == 0 and (ctx.cache / "runs" / "mar").is_dir()
        else:
            res = execute(["export", "-m", "mar_tiny_drift.digits", "-t", "onnx", "-o", "bundle"], ctx.cache, 400)
            ok = res.exit_code == 0 and (ctx.cache / "bundle" / "manifest.json").is_file()
        print(f"cache: {need} {'ready' if ok else 'FAILED'} in {time.monotonic() - t0:.0f}s", flush=True)
        if not ok:
            errors[need] = first_line(res.stderr) or f"exit {res.exit_code}"

    threads = [threading.Thread(target=build, args=(n,)) for n in sorted(needs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------


def table(records: list[Record], skipped: list[tuple[str, str]], total_seconds: float) -> str:
    counts = {c: sum(r.outcome == c for r in records) for c in CLASSES}
    extra = sorted({r.outcome for r in records} - set(CLASSES))
    lines = ["# driftar fault-injection sweep", "",
             f"{len(records)} attempts in {total_seconds / 60:.1f} min; {len(skipped)} skipped.", "",
             "| outcome | attempts |", "|---|---|"]
    lines += [f"| {c} | {counts[c]} |" for c in CLASSES]
    lines += [f"| {c} | {sum(r.outcome == c for r in records)} |" for c in extra]
    lines += ["", "`ok`: valid input that succeeded (or an odd value whose output the case's oracle accepted); "
              "`clear error`: a bad input refused with a short 'Error'/'Usage' message. Every other class is a defect.", ""]
    by_cat: dict[str, dict[str, int]] = {}
    for r in records:
        by_cat.setdefault(r.category, {}).setdefault(r.outcome, 0)
        by_cat[r.category][r.outcome] += 1
    lines += ["## By category", "", "| category | attempts | " + " | ".join(CLASSES) + " |",
              "|---|---|" + "---|" * len(CLASSES)]
    for cat, cc in by_cat.items():
        lines.append(f"| {cat} | {sum(cc.values())} | " + " | ".join(str(cc.get(c, 0) or "") for c in CLASSES) + " |")
    refused = [r for r in records if r.outcome == CLEAR and r.expect == "ok"]
    for cls in list(DEFECTS) + extra:
        rows = [r for r in records if r.outcome == cls]
        if not rows:
            continue
        lines += ["", f"## {cls} ({len(rows)})", ""]
        for r in rows:
            why = "; ".join(r.notes)
            lines.append(f"- `{r.name}` (exit {r.exit_code}, {r.seconds:.0f}s): {r.first_line or '(no stderr)'}"
                         + (f" -- {why}" if why else ""))
    if refused:
        lines += ["", f"## valid inputs refused (counted as clear error) ({len(refused)})", ""]
        lines += [f"- `{r.name}`: {r.first_line}" for r in refused]
    if skipped:
        lines += ["", "## skipped", ""] + [f"- `{n}`: {why}" for n, why in skipped]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/faults.py", description=__doc__)
    ap.add_argument("--jobs", type=int, default=2, help="attempts run in parallel (default 2)")
    ap.add_argument("--only", action="append", default=[], metavar="PATTERN",
                    help="fnmatch pattern on attempt names (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the attempts and exit")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill delays and corruptions")
    ap.add_argument("--markdown", metavar="FILE", help="write the report as markdown")
    ap.add_argument("--json", metavar="FILE", help="write every attempt's record as JSON")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 when any attempt is a defect (traceback, silent, data loss, leftover, hang, unclear)")
    ap.add_argument("--workdir", metavar="DIR", help="where the temp dirs go (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep each attempt's temp dir")
    args = ap.parse_args(argv)

    cases = all_cases()
    if args.only:
        cases = [a for a in cases if any(fnmatch.fnmatch(a.name, p) for p in args.only)]
    if args.list:
        for a in cases:
            print(f"{a.name:60s} {a.category:24s} expect {a.expect}")
        print(f"{len(cases)} attempts")
        return 0

    import driftar_zoo
    workdir = Path(tempfile.mkdtemp(prefix="driftar-faults-", dir=args.workdir))
    ctx = Ctx(cache=workdir / "cache", zoo=Path(driftar_zoo.__file__).parent / "models", seed=args.seed,
              is_root=hasattr(os, "geteuid") and os.geteuid() == 0)
    ctx.cache.mkdir()
    zoo_before = checks.snapshot(ctx.zoo, ["."])
    print(f"{len(cases)} attempts, {args.jobs} at a time, in {workdir} (command: {' '.join(driftar_command())})",
          flush=True)
    t0 = time.monotonic()
    skipped: list[tuple[str, str]] = []
    runnable = []
    for a in cases:
        why = a.skip(ctx) if a.skip else None
        (skipped.append((a.name, why)) if why else runnable.append(a))
    cache_errors = prepare_cache(ctx, {n for a in runnable for n in a.needs})
    for a in list(runnable):
        bad = [n for n in a.needs if n in cache_errors]
        if bad:
            runnable.remove(a)
            skipped.append((a.name, f"cache {bad[0]} failed: {cache_errors[bad[0]]}"))

    lock = threading.Lock()
    records: list[Record] = []

    def one(a: Attempt) -> Record:
        r = run_attempt(a, ctx, workdir, keep=args.keep)
        with lock:
            records.append(r)
            print(f"[{len(records):3d}/{len(runnable)}] {r.name:58s} {r.outcome:20s} {r.seconds:6.1f}s", flush=True)
        return r

    # slow attempts first so the pool does not end on a long tail
    order = sorted(runnable, key=lambda a: -(a.timeout + (100 if a.kill_after or a.concurrent > 1 else 0)))
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, order))
    position = {a.name: i for i, a in enumerate(cases)}
    records.sort(key=lambda r: position[r.name])
    zoo_changed = checks.lost_files(ctx.zoo, zoo_before)
    report = table(records, skipped, time.monotonic() - t0)
    if zoo_changed:
        report += f"\n**The installed zoo changed during the sweep:** {', '.join(zoo_changed[:5])}\n"
    print()
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(report)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "attempts": [asdict(r) for r in records], "skipped": [{"name": n, "why": w} for n, w in skipped],
            "counts": {c: sum(r.outcome == c for r in records) for c in CLASSES}, "seed": args.seed}, indent=1))
    shutil.rmtree(workdir, ignore_errors=True) if not args.keep else None
    defects = [r for r in records if r.outcome not in (OK, CLEAR)]
    return 1 if args.strict and defects else 0
