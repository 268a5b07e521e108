"""The attempts of the sweep, as data: ``Attempt(name, category, setup, argv, expect, ...)``.

``setup(tmp, ctx)`` prepares the attempt's fresh temp dir (the command's cwd) and returns the paths
(relative to it) of files the user owns there; the runner snapshots them, plus a ``user/`` sentinel
tree, before and after (``data loss``). ``argv`` is the driftar command line (without ``driftar``),
or a function ``(tmp, ctx) -> argv``. ``expect``: ``"error"`` for bad input (success is a ``silent
wrong result`` unless ``oracle`` accepts the output: odd-but-valid values), ``"ok"`` for valid input.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
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


# ------------------------------------------------------------------------------------------------
# the cases
# ------------------------------------------------------------------------------------------------


def option_grid(cases: list[Attempt], cat: str, base: list[str], options: dict[str, tuple[set, set]],
                oracle: Callable[[], Any], values: list[str], prefix: str, setup: Setup | None = None,
                **kw: Any) -> None:
    """Every ``option`` x ``value``: ``valid`` values must succeed, ``odd`` ones may succeed (oracle),
    all others must fail cleanly."""
    for opt, (valid, odd) in options.items():
        for v in values:
            argv = with_opt(base, opt, v)
            name = f"{prefix}.{opt.lstrip('-')}={vname(v)}"
            if v in valid:
                cases.append(Attempt(name, cat, setup, argv, "ok", oracle=oracle(), **kw))
            else:
                cases.append(Attempt(name, cat, setup, argv, "error", oracle=oracle() if v in odd else None, **kw))


def _not_root(ctx: Ctx) -> str | None:
    return "running as root: permissions are not enforced, an unwritable directory cannot be made" \
        if ctx.is_root else None


def _unwritable(rel: str) -> Setup:
    def s(tmp: Path, ctx: Ctx) -> list[str]:
        (tmp / rel).mkdir()
        os.chmod(tmp / rel, 0o500)
        return []
    return s


def resumed_from(step: int) -> Callable[[Path, Any], Any]:
    """A resume that succeeded must not have started from the corrupted step ``step``."""
    import re

    def oracle(tmp: Path, res: Any) -> Any:
        m = re.search(r"steps (\d+) -> (\d+)", res.stdout + res.stderr)
        if m and int(m.group(1)) == step:
            return f"resumed from the corrupted step-{step:07d} checkpoint"
        return None
    return oracle


def sample_cases() -> list[Attempt]:
    c: list[Attempt] = []
    img = checks.images_ok
    opts = {"-n": (set(), set()), "--batch-size": (set(), set()), "--per-class": (set(), set()),
            "--num-iter": (set(), set()), "--cfg": ({"0"}, {"1e30"}), "--temperature": (set(), {"0", "1e30"}),
            "--seed": ({"0"}, set()), "--class": ({"0"}, set())}
    option_grid(c, "sample options", SAMPLE, opts, img, VALUES, "sample")
    spec = {"--draft-len": (set(), set()), "--tau0": ({"0"}, {"1e30"}), "--kappa": ({"0"}, {"1e30"})}
    option_grid(c, "sample options", SPEC, spec, img, VALUES, "sample.spec")
    A = Attempt
    c += [
        A("sample.valid", "sample misc", None, SAMPLE, "ok", oracle=img()),
        A("sample.valid_npz", "sample misc", None, with_opt(SAMPLE, "--out", "g.npz"), "ok", oracle=img("g.npz")),
        A("sample.per_class=1", "sample misc", None, SAMPLE + ["--per-class", "1"], "ok", oracle=img()),
        A("sample.per_class=-2", "sample misc", None, SAMPLE + ["--per-class", "-2"], "error"),
        A("sample.num_iter=1000", "sample misc", None, with_opt(SAMPLE, "--num-iter", "1000"), "error", oracle=img()),
        A("sample.class=99", "sample misc", None, SAMPLE + ["--class", "99"], "error"),
        A("sample.class=3+99", "sample misc", None, SAMPLE + ["--class", "3", "--class", "99"], "error"),
        A("sample.evaluator_model", "sample misc", None, swap(SAMPLE, "mar_tiny_drift.digits", "digits_evaluator.digits"), "error"),
        A("sample.speculative_without_draft", "sample misc", None, SAMPLE + ["--speculative"], "error"),
        A("sample.draft_len_without_draft", "sample misc", None, SAMPLE + ["--draft-len", "4"], "error", oracle=img()),
        A("sample.spec.no_speculative", "sample misc", None, SPEC + ["--no-speculative"], "ok", oracle=img()),
        A("sample.spec.draft_len=1000", "sample misc", None, SPEC + ["--draft-len", "1000"], "error", oracle=img()),
        A("sample.spec.batch4", "sample misc", None, with_opt(SPEC + ["--speculative"], "--batch-size", "4"), "error", oracle=img()),
        A("sample.unknown_model", "sample misc", None, swap(SAMPLE, "mar_tiny_drift.digits", "nope.digits"), "error"),
        A("sample.arch_without_weights", "sample misc", None, swap(SAMPLE, "mar_tiny_drift.digits", "mar_tiny"), "error", oracle=img()),
        A("sample.missing_path", "sample misc", None, swap(SAMPLE, "mar_tiny_drift.digits", "/nonexistent/model"), "error"),
        A("sample.empty_dir", "sample misc", lambda t, x: (t / "E").mkdir() or [], swap(SAMPLE, "mar_tiny_drift.digits", "E"), "error"),
        A("sample.model_is_file", "sample misc", user_files("M.txt"), swap(SAMPLE, "mar_tiny_drift.digits", "M.txt"), "error"),
        A("sample.out_parent_is_file", "sample output", user_files("f.txt"), with_opt(SAMPLE, "--out", "f.txt/g.png"), "error"),
        A("sample.out_is_dir", "sample output", lambda t, x: (t / "g.png").mkdir() or [], SAMPLE, "error"),
        A("sample.out_suffix_jpg", "sample output", None, with_opt(SAMPLE, "--out", "g.jpg"), "error"),
        A("sample.out_no_suffix", "sample output", None, with_opt(SAMPLE, "--out", "g"), "error"),
        A("sample.out_empty", "sample output", None, with_opt(SAMPLE, "--out", ""), "error"),
        A("sample.out_nested_new_dirs", "sample output", None, with_opt(SAMPLE, "--out", "a/b/g.png"), "ok", oracle=img("a/b/g.png")),
        A("sample.out_overwrite", "sample output", then(lambda t, x: [], make_png("g.png")), SAMPLE, "ok", oracle=img()),
        A("sample.out_unwritable_dir", "sample output", _unwritable("ro"), with_opt(SAMPLE, "--out", "ro/g.png"), "error",
          skip=_not_root),
    ]
    return c


def run_cases() -> list[Attempt]:
    c: list[Attempt] = []
    img = checks.images_ok
    opts = {"-n": (set(), set()), "--batch-size": (set(), set()), "--threads": (set(), {"0"}),
            "--num-iter": (set(), set()), "--cfg": ({"0"}, {"1e30"}), "--temperature": (set(), {"0", "1e30"}),
            "--seed": ({"0"}, set()), "--class": ({"0"}, set()), "--draft-len": (set(), set()),
            "--tau0": (set(), {"0", "1e30"}), "--kappa": (set(), {"0", "1e30"})}
    option_grid(c, "run options", RUN, opts, img, ["0", "-1", "nan", "inf", "1e30", "abc"], "run", setup=copy_bundle,
                needs=("bundle",))
    A = Attempt
    b = dict(setup=copy_bundle, needs=("bundle",))
    c += [
        A("run.valid", "run misc", argv=RUN, expect="ok", oracle=img(), **b),
        A("run.compare", "run misc", argv=RUN + ["--compare"], expect="ok", oracle=img(), **b),
        A("run.batch_size=1000", "run misc", argv=RUN + ["--batch-size", "1000"], expect="error", oracle=img(), **b),
        A("run.n=1000_over_max_batch", "run misc", argv=with_opt(RUN, "-n", "40"), expect="ok", oracle=img(), **b),
        A("run.providers_bogus", "run misc", argv=RUN + ["--providers", "bogus"], expect="error", **b),
        A("run.providers_empty", "run misc", argv=RUN + ["--providers", ""], expect="error", **b),
        A("run.backend_tensorrt", "run misc", argv=RUN + ["--backend", "tensorrt"], expect="error", **b),
        A("run.sampler_speculative_masked", "run misc", argv=RUN + ["--sampler", "speculative"], expect="error", **b),
        A("run.class=99", "run misc", argv=RUN + ["--class", "99"], expect="error", **b),
        A("run.missing_bundle", "run misc", None, swap(RUN, "B", "nope"), "error"),
        A("run.empty_dir_bundle", "run misc", lambda t, x: (t / "B").mkdir() or [], RUN, "error"),
        A("run.model_dir_as_bundle", "run misc", copy_model("mar_tiny_drift.digits", "B"), RUN, "error"),
        A("run.out_parent_is_file", "run misc", argv=with_opt(RUN, "--out", "f.txt/g.png"), expect="error",
          setup=lambda t, x: copy_bundle(t, x) + user_files("f.txt")(t, x), needs=("bundle",)),
        A("run.out_suffix_jpg", "run misc", argv=with_opt(RUN, "--out", "g.jpg"), expect="error", **b),
    ]
    return c


def eval_bench_cases() -> list[Attempt]:
    c: list[Attempt] = []
    vals = SHORT
    jok = checks.json_ok
    opts = {"--num-samples": (set(), set()), "--seeds": (set(), set()), "--num-iter": (set(), set()),
            "--cfg": ({"0"}, {"1e30"}), "--temperature": (set(), {"0", "1e30"}), "--seed": ({"0"}, set())}
    option_grid(c, "eval options", EVAL, opts, lambda: jok("r.json"), vals, "eval")
    opts = {"--repeats": (set(), set()), "--warmup": ({"0"}, set()), "--burn-in": ({"0"}, set()),
            "--eval-samples": (set(), set()), "--eval-seeds": (set(), set()), "--threads": (set(), {"0"})}
    option_grid(c, "bench options", BENCH, opts, lambda: jok("b.json"), vals, "bench")
    A = Attempt
    c += [
        A("eval.valid", "eval misc", None, EVAL, "ok", oracle=jok("r.json")),
        A("eval.evaluator_model", "eval misc", None, swap(EVAL, "mar_tiny_drift.digits", "digits_evaluator.digits"), "error"),
        A("eval.unknown_model", "eval misc", None, swap(EVAL, "mar_tiny_drift.digits", "nope.digits"), "error"),
        A("eval.json_parent_is_file", "eval misc", user_files("f.txt"), with_opt(EVAL, "--json", "f.txt/r.json"), "error"),
        A("bench.valid", "bench misc", None, BENCH, "ok", oracle=jok("b.json")),
        A("bench.unknown_model", "bench misc", None, swap(BENCH, "mar_tiny_drift.digits", "nope.digits"), "error"),
        A("bench.bad_suffix", "bench misc", None, swap(BENCH, "mar_tiny_drift.digits", "mar_tiny_drift.digits@bogus"), "error"),
        A("bench.json_parent_is_file", "bench misc", user_files("f.txt"), with_opt(BENCH, "--json", "f.txt/b.json"), "error"),
        A("bench.markdown_is_dir", "bench misc", lambda t, x: (t / "m.md").mkdir() or [], BENCH + ["--markdown", "m.md"], "error"),
        A("zoo.info_unknown", "zoo misc", None, ["zoo", "info", "nope.digits"], "error"),
        A("zoo.info_valid", "zoo misc", None, ["zoo", "info", "mar_tiny.digits"], "ok"),
        A("zoo.list_bad_pattern", "zoo misc", None, ["zoo", "list", "["], "error", oracle=lambda t, r: None),
        A("zoo.publish_missing_run", "zoo misc", None, ["zoo", "publish", "nope", "--name", "x.y", "--command", "c", "--out", "Z"], "error"),
        A("zoo.publish_bad_name", "zoo misc", setup=copy_run, needs=("run",), expect="error",
          argv=lambda t, x: ["zoo", "publish", x.run_rel, "--name", "no-tag", "--command", "c", "--out", "Z",
                             "--eval-samples", "4", "--eval-seeds", "1"]),
        A("models.bad_pattern", "zoo misc", None, ["models", "["], "error", oracle=lambda t, r: None),
        A("plugins.json", "zoo misc", None, ["plugins", "--json"], "ok"),
    ]
    return c


def export_cases() -> list[Attempt]:
    c: list[Attempt] = []
    bok = checks.bundle_ok
    x = dict(timeout=180.0)
    option_grid(c, "export options", EXPORT, {"--threads": (set(), {"0"})}, bok, VALUES, "export", **x)
    vals = SHORT + ["inf"]
    for key, valid, odd in [("max_batch", set(), set()), ("opset", set(), set()), ("parity_atol", set(), {"inf"}),
                            ("check_batch", set(), set()), ("max_draft_len", set(), {"1e30"}),
                            ("max_prompt_len", set(), {"1e30"}), ("seed", {"0"}, set())]:
        for v in vals:
            argv = EXPORT + ["--set", f"{key}={v}"]
            name = f"export.set.{key}={vname(v)}"
            c.append(Attempt(name, "export options", None, argv, "ok" if v in valid else "error",
                             oracle=bok() if v in valid | odd else None, **x))
    A = Attempt
    c += [
        A("export.set_unknown_key", "export misc", None, EXPORT + ["--set", "bogus=1"], "error"),
        A("export.set_no_equals", "export misc", None, EXPORT + ["--set", "max_batch"], "error"),
        A("export.set_precision_fp16", "export misc", None, EXPORT + ["--set", "precision=fp16"], "error"),
        A("export.set_sampler_bogus", "export misc", None, EXPORT + ["--set", "sampler=bogus"], "error"),
        A("export.target_unknown", "export misc", None, swap(EXPORT, "onnx", "nope"), "error"),
        A("export.target_tensorrt", "export misc", None, swap(EXPORT, "onnx", "tensorrt"), "error", **x),
        A("export.unknown_model", "export misc", None, swap(EXPORT, "mar_tiny_drift.digits", "nope.digits"), "error"),
        A("export.evaluator_model", "export misc", None, swap(EXPORT, "mar_tiny_drift.digits", "digits_evaluator.digits"), "error", **x),
        A("export.baseline_model", "export misc", None, swap(EXPORT, "mar_tiny_drift.digits", "mar_tiny.digits"), "error", oracle=bok(), **x),
        A("export.into_foreign_manifest", "export destination", user_files("B/manifest.json", "B/src/important.txt"), EXPORT, "error", **x),
        A("export.into_nonempty_dir", "export destination", user_files("B/notes.txt"), EXPORT, "error", **x),
        A("export.over_existing_bundle", "export destination", lambda t, ctx: copy_bundle(t, ctx) and [], EXPORT, "ok",
          oracle=bok(), needs=("bundle",), **x),
        A("export.out_is_file", "export destination", user_files("B"), EXPORT, "error"),
        A("export.out_parent_is_file", "export destination", user_files("f.txt"), with_opt(EXPORT, "-o", "f.txt/B"), "error"),
        A("export.out_unwritable_parent", "export destination", _unwritable("ro"), with_opt(EXPORT, "-o", "ro/B"), "error",
          skip=_not_root, **x),
    ]
    return c


TRAIN_FIELDS: dict[str, tuple[set, set]] = {
    # field: (valid values: must train, odd values: may train if the result is sound)
    "data.batch_size": (set(), set()), "data.image_size": (set(), set()), "data.num_workers": ({"0"}, set()),
    "optim.lr": (set(), {"0", "1e30"}), "optim.weight_decay": ({"0"}, {"1e30"}), "optim.warmup_steps": ({"0"}, {"1e30"}),
    "optim.grad_clip": (set(), {"0", "inf", "1e30"}), "optim.ema_decay": (set(), {"0"}),
    "train.steps": (set(), {"0"}), "train.log_every": (set(), {"0", "1e30"}), "train.sample_every": ({"0"}, {"1e30"}),
    "train.ckpt_every": ({"0"}, {"1e30"}), "train.threads": (set(), set()), "train.grid_per_class": (set(), {"0"}),
    "train.seed": ({"0"}, {"-1", "1e30"}), "train.keep_checkpoints": ({"0"}, {"1e30"}),
}


def train_cases() -> list[Attempt]:
    c: list[Attempt] = []
    rok = checks.run_ok
    for key, (valid, odd) in TRAIN_FIELDS.items():
        for v in SHORT + (["inf"] if "inf" in odd else []):
            argv = TRAIN + ["--set", f"{key}={v}"]
            name = f"train.set.{key}={vname(v)}"
            c.append(Attempt(name, "train config", None, argv, "ok" if v in valid else "error",
                             oracle=rok() if v in valid | odd else None))
    for i, v in enumerate(["[0.9, 1.5]", "[-0.1, 0.9]", "[nan, 0.9]", "[0.9]", "abc", "0.9"]):
        c.append(Attempt(f"train.set.optim.betas#{i}", "train config", None, TRAIN + ["--set", f"optim.betas={v}"], "error"))
    A = Attempt
    cfg = "train config file"
    c += [
        A("train.valid", "train misc", None, TRAIN, "ok", oracle=rok(2)),
        A("train.print_config", "train misc", None, TRAIN + ["--print-config"], "ok"),
        A("train.config_bad_json", cfg, user_files("c.json"), TRAIN + ["--config", "c.json"], "error"),
        A("train.config_yaml", cfg, then(lambda t, x: ["c.yaml"], write("c.yaml", "train:\n  steps: 2\n")), TRAIN + ["--config", "c.yaml"], "error"),
        A("train.config_missing", cfg, None, TRAIN + ["--config", "nope.toml"], "error"),
        A("train.config_bad_toml", cfg, then(lambda t, x: ["c.toml"], write("c.toml", "[train\nsteps=")), TRAIN + ["--config", "c.toml"], "error"),
        A("train.config_unknown_key", cfg, then(lambda t, x: ["c.toml"], write("c.toml", "[train]\nbogus = 1\n")), TRAIN + ["--config", "c.toml"], "error"),
        A("train.config_json_list", cfg, then(lambda t, x: ["c.json"], write("c.json", "[1, 2]")), TRAIN + ["--config", "c.json"], "error"),
        A("train.config_json_section_int", cfg, then(lambda t, x: ["c.json"], write("c.json", '{"train": 5}')), TRAIN + ["--config", "c.json"], "error"),
        A("train.config_json_nan_lr", cfg, then(lambda t, x: ["c.json"], write("c.json", '{"optim": {"lr": NaN}}')), TRAIN + ["--config", "c.json"], "error"),
        A("train.config_empty_file", cfg, then(lambda t, x: ["c.json"], write("c.json", "")), TRAIN + ["--config", "c.json"], "error"),
        A("train.config_is_dir", cfg, lambda t, x: (t / "c.json").mkdir() or [], TRAIN + ["--config", "c.json"], "error"),
        A("train.set_no_equals", "train misc", None, TRAIN + ["--set", "optim.lr"], "error"),
        A("train.set_unknown_key", "train misc", None, TRAIN + ["--set", "bogus.key=1"], "error"),
        A("train.set_section_scalar", "train misc", None, TRAIN + ["--set", "train=5"], "error"),
        A("train.set_empty_key", "train misc", None, TRAIN + ["--set", "=5"], "error"),
        A("train.set_arch_unknown", "train misc", None, TRAIN + ["--set", "model.arch=nope"], "error"),
        A("train.set_arch_other_backbone", "train misc", None, TRAIN + ["--set", "model.arch=nextstep1_tiny"], "error"),
        A("train.set_model_depth=0", "train misc", None, TRAIN + ["--set", "model.args.encoder_depth=0"], "error"),
        A("train.set_model_patch=3", "train misc", None, TRAIN + ["--set", "model.args.patch_size=3"], "error"),
        A("train.set_model_bogus_arg", "train misc", None, TRAIN + ["--set", "model.args.bogus=1"], "error"),
        A("train.set_dataset_unknown", "train misc", None, TRAIN + ["--set", "data.dataset=nope"], "error"),
        A("train.set_imagefolder_no_root", "train misc", None, TRAIN + ["--set", "data.dataset=imagefolder"], "error"),
        A("train.set_imagefolder_missing_root", "train misc", None, TRAIN + sets(data__dataset="imagefolder", data__root="/nonexistent"), "error"),
        A("train.set_imagefolder_empty_root", "train misc", lambda t, x: (t / "imgs").mkdir() or [],
          TRAIN + sets(data__dataset="imagefolder", data__root="imgs"), "error"),
        A("train.set_device_cuda", "train misc", None, TRAIN + ["--set", "train.device=cuda"], "error"),
        A("train.set_grid_class=99", "train misc", None, TRAIN + ["--set", "train.grid_classes=[99]"], "error"),
        A("train.set_grid_classes_empty", "train misc", None, TRAIN + ["--set", "train.grid_classes=[]"], "error", oracle=rok()),
        A("train.set_name_slash", "train misc", None, TRAIN + ["--set", "train.name=../../escape"], "error", oracle=rok()),
        A("train.runs_dir_is_file", "train misc", user_files("runs"), TRAIN, "error"),
        A("train.init_from_unknown", "train misc", None, TRAIN + ["--set", "model.init_from=nope.digits"], "error"),
        A("train.init_from_missing_path", "train misc", None, TRAIN + ["--set", "model.init_from=/nonexistent"], "error"),
        A("train.init_from_evaluator", "train misc", None, TRAIN + ["--set", "model.init_from=digits_evaluator.digits"], "error"),
        A("train.backbone_unknown", "train misc", None, swap(TRAIN, "mar", "nope"), "error"),
        A("train.recipe_unknown", "train misc", None, swap(TRAIN, "baseline", "nope"), "error"),
        A("train.resume_latest_none", "train misc", None, TRAIN + ["--resume", "latest"], "error"),
        A("train.resume_missing", "train misc", None, TRAIN + ["--resume", "/nonexistent"], "error"),
        A("train.resume_empty_dir", "train misc", lambda t, x: (t / "E").mkdir() or [], TRAIN + ["--resume", "E"], "error"),
        A("train.resume_file", "train misc", user_files("f.txt"), TRAIN + ["--resume", "f.txt"], "error"),
        A("train.resume_valid", "train misc", copy_run, lambda t, x: TRAIN + ["--resume", x.run_rel, "--set", "train.steps=4"],
          "ok", oracle=rok(4), needs=("run",)),
        A("train.resume_latest_valid", "train misc", copy_run, TRAIN + ["--resume", "latest", "--set", "train.steps=4"],
          "ok", oracle=rok(4), needs=("run",)),
        A("train.resume_fewer_steps", "train misc", copy_run, lambda t, x: TRAIN + ["--resume", x.run_rel, "--set", "train.steps=1"],
          "error", needs=("run",)),
        A("train.resume_model_changed", "train misc", copy_run,
          lambda t, x: TRAIN + ["--resume", x.run_rel, "--set", "train.steps=4", "--set", "model.args.encoder_depth=1"],
          "error", needs=("run",)),
    ]
    return c


MODEL_CORRUPTIONS: list[tuple[str, list[Callable[[Path], None]], str]] = [
    # (name, mutations of M/, "never" (must not load) | "either" (clean refusal or a sound result))
    ("weights_flip_middle", [on("M/model.safetensors", flip)], "never"),
    ("weights_flip_header", [on("M/model.safetensors", lambda p: flip(p, 8))], "never"),
    ("weights_flip_tail", [on("M/model.safetensors", lambda p: flip(p, p.stat().st_size - 400))], "never"),
    ("weights_truncated_half", [on("M/model.safetensors", lambda p: truncate(p, 0.5))], "never"),
    ("weights_truncated_7", [on("M/model.safetensors", lambda p: truncate(p, 7))], "never"),
    ("weights_empty", [on("M/model.safetensors", lambda p: truncate(p, 0))], "never"),
    ("weights_deleted", [delete("M/model.safetensors")], "never"),
    ("weights_nan_rehashed", [on("M/model.safetensors", lambda p: rewrite_weights(p, nan_all))], "never"),
    ("weights_missing_tensor_rehashed", [on("M/model.safetensors", lambda p: rewrite_weights(p, drop_one))], "never"),
    ("weights_wrong_shape_rehashed", [on("M/model.safetensors", lambda p: rewrite_weights(p, wrong_shape))], "never"),
    ("weights_extra_tensor_rehashed", [on("M/model.safetensors", lambda p: rewrite_weights(p, extra_tensor))], "either"),
    ("config_bad_json", [write("M/config.json", "{bad json")], "never"),
    ("config_empty", [write("M/config.json", "")], "never"),
    ("config_list", [write("M/config.json", "[]")], "never"),
    ("config_deleted", [delete("M/config.json")], "never"),
    ("config_missing_arch", [on("M/config.json", lambda p: edit_json(p, lambda d: d.pop("arch") and None))], "never"),
    ("config_missing_config", [on("M/config.json", lambda p: edit_json(p, lambda d: d.pop("config") and None))], "never"),
    ("config_config_string", [on("M/config.json", lambda p: edit_json(p, lambda d: {**d, "config": "abc"}))], "never"),
    ("config_arch_unknown", [on("M/config.json", lambda p: edit_json(p, lambda d: {**d, "arch": "nope"}))], "never"),
    ("config_img_size_string", [on("M/config.json", lambda p: edit_json(p, lambda d: d["config"].update(img_size="abc")))], "never"),
    ("config_width_changed", [on("M/config.json", lambda p: edit_json(p, lambda d: d["config"].update(encoder_embed_dim=64)))], "never"),
    ("config_num_iter_0", [on("M/config.json", lambda p: edit_json(p, lambda d: d["config"]["sampling"].update(num_iter=0)))], "never"),
    ("config_cfg_nan", [on("M/config.json", lambda p: edit_json(p, lambda d: d["config"]["sampling"].update(cfg=float("nan"))))], "never"),
    ("config_format_99", [on("M/config.json", lambda p: edit_json(p, lambda d: {**d, "format": 99}))], "never"),
    ("card_deleted", [delete("M/card.json")], "either"),
    ("card_bad_json", [write("M/card.json", "{bad")], "either"),
    ("card_sha_changed", [on("M/card.json", lambda p: edit_json(p, lambda d: {**d, "sha256": "0" * 64}))], "never"),
]


def model_dir_cases() -> list[Attempt]:
    c: list[Attempt] = []
    sample_m = swap(SAMPLE, "mar_tiny_drift.digits", "M")
    for name, muts, kind in MODEL_CORRUPTIONS:
        oracle = checks.never("a corrupted model directory loaded") if kind == "never" else checks.images_ok()
        c.append(Attempt(f"model.{name}", "model dir corruption", then(copy_model("mar_tiny_drift.digits"), *muts),
                         sample_m, "error", oracle=oracle))
    spec_m = swap(SPEC, "nextstep1_tiny_drift.digits", "M")
    for name, muts, kind in MODEL_CORRUPTIONS:
        if name in ("weights_flip_middle", "weights_truncated_half", "weights_nan_rehashed", "config_bad_json",
                    "weights_missing_tensor_rehashed"):
            c.append(Attempt(f"model.nextstep1.{name}", "model dir corruption",
                             then(copy_model("nextstep1_tiny_drift.digits"), *muts), spec_m, "error",
                             oracle=checks.never("a corrupted model directory loaded")))
    other = {"export": (swap(EXPORT, "mar_tiny_drift.digits", "M"), 180.0),
             "eval": (swap(EVAL, "mar_tiny_drift.digits", "M"), 90.0),
             "bench": (swap(BENCH, "mar_tiny_drift.digits", "M"), 90.0)}
    for cmd, (argv, timeout) in other.items():
        for name, muts, _ in MODEL_CORRUPTIONS:
            if name in ("weights_flip_middle", "weights_nan_rehashed") or (cmd == "export" and name == "config_bad_json"):
                c.append(Attempt(f"model.{cmd}.{name}", "model dir corruption",
                                 then(copy_model("mar_tiny_drift.digits"), *muts), argv, "error",
                                 oracle=checks.never("a corrupted model directory loaded"), timeout=timeout))
    return c


def run_dir_cases() -> list[Attempt]:
    """A trained run (2 steps, a checkpoint per step) with one file corrupted, then sample / resume it."""
    step = "checkpoints/step-0000002"
    corruptions: list[tuple[str, Callable[[Path], None], bool]] = [
        # (name, mutation of the run dir, does it corrupt the step-2 checkpoint's weights or state)
        ("state_json_truncated", lambda r: truncate(r / step / "state.json", 0.5), True),
        ("state_json_bad", lambda r: (r / step / "state.json").write_text("{bad"), True),
        ("state_json_deleted", lambda r: (r / step / "state.json").unlink(), True),
        ("state_json_step_99", lambda r: edit_json(r / step / "state.json", lambda d: {**d, "step": 99}), True),
        ("ckpt_model_flip", lambda r: flip(r / step / "model.safetensors"), True),
        ("ckpt_model_truncated", lambda r: truncate(r / step / "model.safetensors", 0.5), True),
        ("ckpt_raw_flip", lambda r: flip(r / step / "raw.safetensors"), True),
        ("ckpt_raw_truncated", lambda r: truncate(r / step / "raw.safetensors", 0.5), True),
        ("ckpt_raw_nan_rehashed", lambda r: rewrite_weights(r / step / "raw.safetensors", nan_all), True),
        ("ckpt_state_st_flip", lambda r: flip(r / step / "state.safetensors"), True),
        ("ckpt_state_st_truncated", lambda r: truncate(r / step / "state.safetensors", 0.5), True),
        ("latest_missing_target", lambda r: (r / "checkpoints/latest").write_text("step-0000099\n"), False),
        ("latest_empty", lambda r: (r / "checkpoints/latest").write_text(""), False),
        ("latest_traversal", lambda r: (r / "checkpoints/latest").write_text("../../../../../etc\n"), False),
        ("latest_garbage", lambda r: (r / "checkpoints/latest").write_bytes(os.urandom(0) + b"\xff\xfe\x00garbage"), False),
        ("latest_deleted", lambda r: (r / "checkpoints/latest").unlink(), False),
        ("checkpoints_deleted", lambda r: shutil.rmtree(r / "checkpoints"), False),
        ("run_config_bad", lambda r: (r / "config.json").write_text("{bad"), False),
        ("run_config_deleted", lambda r: (r / "config.json").unlink(), False),
        ("metrics_truncated", lambda r: truncate(r / "metrics.csv", 0.7), False),
        ("metrics_deleted", lambda r: (r / "metrics.csv").unlink(), False),
    ]

    def corrupt(fn: Callable[[Path], None]) -> Setup:
        def s(tmp: Path, ctx: Ctx) -> list[str]:
            copy_run(tmp, ctx)
            fn(tmp / ctx.run_rel)
            return []
        return s

    c: list[Attempt] = []
    for name, fn, ckpt in corruptions:
        oracle = checks.all_of(checks.run_ok(4), resumed_from(2)) if ckpt else checks.run_ok(4)
        c.append(Attempt(f"rundir.resume.{name}", "run dir corruption", corrupt(fn),
                         lambda t, x: TRAIN + ["--resume", x.run_rel, "--set", "train.steps=4"], "error",
                         oracle=oracle, needs=("run",)))
    sample_r = lambda t, x: swap(SAMPLE, "mar_tiny_drift.digits", x.run_rel) + ["--num-iter", "2"]  # noqa: E731
    never = checks.never("a corrupted model loaded")
    model_muts = [
        ("model_weights_flip", lambda r: flip(r / "model/model.safetensors"), never),
        ("model_weights_truncated", lambda r: truncate(r / "model/model.safetensors", 0.5), never),
        ("model_weights_nan_rehashed", lambda r: rewrite_weights(r / "model/model.safetensors", nan_all), never),
        ("model_config_bad", lambda r: (r / "model/config.json").write_text("{bad"), never),
        ("model_deleted_ckpt_flip", lambda r: (shutil.rmtree(r / "model"), flip(r / step / "model.safetensors")), never),
        ("model_deleted_ckpt_nan_rehashed", lambda r: (shutil.rmtree(r / "model"),
                                                       rewrite_weights(r / step / "model.safetensors", nan_all)), never),
        ("model_deleted_latest_traversal", lambda r: (shutil.rmtree(r / "model"),
                                                      (r / "checkpoints/latest").write_text("../../../../../etc\n")), never),
        ("ckpt_corruption_only", lambda r: flip(r / step / "raw.safetensors"), None),
    ]
    for name, fn, oracle in model_muts:
        c.append(Attempt(f"rundir.sample.{name}", "run dir corruption", corrupt(fn), sample_r,
                         "error" if oracle else "ok", oracle=oracle or checks.images_ok(), needs=("run",)))
    c.append(Attempt("rundir.sample.step_dir_flip", "run dir corruption", corrupt(lambda r: flip(r / step / "model.safetensors")),
                     lambda t, x: swap(SAMPLE, "mar_tiny_drift.digits", f"{x.run_rel}/{step}") + ["--num-iter", "2"],
                     "error", oracle=never, needs=("run",)))
    c.append(Attempt("rundir.sample.valid", "run dir corruption", copy_run, sample_r, "ok", oracle=checks.images_ok(),
                     needs=("run",)))
    return c


def _graph(name: str) -> Callable[[dict], None]:
    return lambda d: d["graphs"][name]


def bundle_cases() -> list[Attempt]:
    def man(fn: Callable[[dict], Any]) -> Callable[[Path], None]:
        return on("B/manifest.json", lambda p: edit_json(p, fn))

    def set_file(name: str, value: str) -> Callable[[dict], None]:
        return lambda d: d["graphs"][name].update(file=value)

    def copy_outside(tmp: Path) -> None:
        shutil.copy(tmp / "B/graphs/decoder.onnx", tmp / "foreign.onnx")

    muts: list[tuple[str, list[Callable[[Path], None]], str]] = [
        ("decoder_flip_middle", [on("B/graphs/decoder.onnx", flip)], "never"),
        ("decoder_flip_head", [on("B/graphs/decoder.onnx", lambda p: flip(p, 0, 64))], "never"),
        ("decoder_flip_tail", [on("B/graphs/decoder.onnx", lambda p: flip(p, p.stat().st_size - 400))], "never"),
        ("decoder_truncated_half", [on("B/graphs/decoder.onnx", lambda p: truncate(p, 0.5))], "never"),
        ("decoder_empty", [on("B/graphs/decoder.onnx", lambda p: truncate(p, 0))], "never"),
        ("decoder_deleted", [delete("B/graphs/decoder.onnx")], "never"),
        ("target_step_flip", [on("B/graphs/target_step.onnx", flip)], "never"),
        ("detokenize_truncated", [on("B/graphs/detokenize.onnx", lambda p: truncate(p, 0.5))], "never"),
        ("graphs_swapped", [lambda t: (os.replace(t / "B/graphs/decoder.onnx", t / "B/graphs/x"),
                                       os.replace(t / "B/graphs/detokenize.onnx", t / "B/graphs/decoder.onnx"),
                                       os.replace(t / "B/graphs/x", t / "B/graphs/detokenize.onnx"))], "never"),
        ("manifest_bad_json", [write("B/manifest.json", "{bad")], "never"),
        ("manifest_empty", [write("B/manifest.json", "")], "never"),
        ("manifest_deleted", [delete("B/manifest.json")], "never"),
        ("manifest_traversal", [man(set_file("decoder", "../../../../etc/passwd"))], "never"),
        ("manifest_absolute", [man(set_file("decoder", "/etc/passwd"))], "never"),
        ("manifest_outside_real_graph", [copy_outside, man(set_file("decoder", "../foreign.onnx"))], "never"),
        ("manifest_input_shape", [man(lambda d: d["graphs"]["decoder"]["inputs"][3].update(shape=["rows", 5]))], "never"),
        ("manifest_token_shape", [man(lambda d: d["model"].update(token_shape=[64, 5]))], "never"),
        ("manifest_image_shape", [man(lambda d: d["model"].update(image_shape=[3, 32, 32]))], "never"),
        ("manifest_max_batch_0", [man(lambda d: (d["options"].update(max_batch=0),
                                                 [g["dims"]["rows"].update(max=0) for g in d["graphs"].values() if "rows" in g.get("dims", {})]))], "never"),
        ("manifest_max_batch_neg", [man(lambda d: d["options"].update(max_batch=-1))], "never"),
        ("manifest_max_batch_huge", [man(lambda d: d["options"].update(max_batch=10**9))], "either"),
        ("manifest_format_99", [man(lambda d: {**d, "format": "driftar-export/99"})], "never"),
        ("manifest_graphs_missing", [man(lambda d: {k: v for k, v in d.items() if k != "graphs"})], "never"),
        ("manifest_num_iter_0", [man(lambda d: (d["sampler"].update(num_iter=0), d["samplers"]["plain"].update(num_iter=0)))], "never"),
        ("manifest_sampler_bogus", [man(lambda d: (d["sampler"].update(kind="bogus"), d["samplers"]["plain"].update(kind="bogus")))], "never"),
        ("manifest_class_num_0", [man(lambda d: d["model"].update(class_num=0))], "never"),
        ("manifest_parity_failed", [man(lambda d: d["parity"].update(passed=False))], "never"),
    ]
    c: list[Attempt] = []
    for name, ms, kind in muts:
        oracle = checks.never("a corrupted bundle ran") if kind == "never" else checks.images_ok()
        c.append(Attempt(f"bundle.{name}", "bundle corruption", then(copy_bundle, *ms), RUN, "error", oracle=oracle,
                         needs=("bundle",)))
    return c


def _latest_step(tmp: Path) -> int | None:
    for run in checks.run_dirs(tmp):
        latest = run / "checkpoints" / "latest"
        if latest.is_file():
            try:
                return int(latest.read_text().strip().split("-")[-1])
            except ValueError:
                return None
    return None


def _resume_after_kill(tmp: Path, ctx: Ctx) -> list[str]:
    step = _latest_step(tmp)
    if step is None:                   # killed before its first checkpoint: a fresh start
        return list(TRAIN)
    return TRAIN + ["--resume", "latest", "--set", f"train.steps={step + 2}", "--set", "train.ckpt_every=1"]


def _resumed_ok(tmp: Path, res: Any) -> Any:
    step = None
    import re
    m = re.search(r"steps (\d+) -> (\d+)", res.stdout)
    if m:
        step = int(m.group(2))
    return checks.run_ok(step)(tmp, res)


def _torn(out: str) -> Callable[[Path, Any], Any]:
    def check(tmp: Path, res: Any) -> Any:
        bad = checks.check_images(tmp / out) if (tmp / out).exists() else None
        return ("data loss", f"after the kill: {bad}") if bad else None
    return check


def _torn_bundle(tmp: Path, res: Any) -> Any:
    if (tmp / "B").exists():
        bad = checks.check_bundle(tmp / "B")
        if bad:
            return f"after the kill B/ is a partial bundle: {bad}"
    return None


def kill_and_concurrency_cases() -> list[Attempt]:
    A = Attempt
    long_train = TRAIN + sets(train__steps=300, train__ckpt_every=1, train__log_every=1)
    c: list[Attempt] = []
    for i in range(4):
        c.append(A(f"kill.train#{i}", "kill", None, long_train, "ok", oracle=_resumed_ok, kill_after=(4.0, 16.0),
                   next_start=_resume_after_kill, timeout=150))
    c.append(A("kill.resume#0", "kill", copy_run, TRAIN + ["--resume", "latest"] + sets(train__steps=300, train__ckpt_every=1),
               "ok", oracle=_resumed_ok, kill_after=(4.0, 12.0), next_start=_resume_after_kill, needs=("run",), timeout=150))
    for i in range(2):
        c.append(A(f"kill.export#{i}", "kill", None, EXPORT, "ok", oracle=checks.bundle_ok(), kill_after=(3.0, 22.0),
                   after_kill=_torn_bundle, next_start=list(EXPORT), timeout=240))
    c.append(A("kill.export_over_bundle#0", "kill", copy_bundle, EXPORT, "ok", oracle=checks.bundle_ok(),
               kill_after=(3.0, 22.0), after_kill=lambda t, r: ("data loss", f"previous bundle lost: {checks.check_bundle(t / 'B')}")
               if checks.check_bundle(t / "B") else None, next_start=list(EXPORT), needs=("bundle",), timeout=240))
    slow_sample = ["sample", "-c", "mar_tiny.digits", "-n", "8", "--batch-size", "2", "--out", "g.png"]
    for i in range(2):
        c.append(A(f"kill.sample_overwrite#{i}", "kill", then(lambda t, x: [], make_png("g.png")), slow_sample, "ok",
                   oracle=checks.images_ok(), kill_after=(3.0, 10.0), after_kill=_torn("g.png"), next_start=list(SAMPLE)))
    c.append(A("kill.sample_npz#0", "kill", None, with_opt(slow_sample, "--out", "g.npz"), "ok", oracle=checks.images_ok("g.npz"),
               kill_after=(3.0, 10.0), after_kill=_torn("g.npz"), next_start=with_opt(SAMPLE, "--out", "g.npz")))
    resume = lambda t, x: TRAIN + ["--resume", x.run_rel] + sets(train__steps=60, train__ckpt_every=5)  # noqa: E731
    c += [
        A("concurrent.resume_same_run", "concurrent", copy_run, resume, "ok", oracle=checks.run_ok(60), concurrent=2,
          lock_pid=True, needs=("run",), timeout=150),
        A("concurrent.resume_latest_twice", "concurrent", copy_run, TRAIN + ["--resume", "latest"] + sets(train__steps=60, train__ckpt_every=5),
          "ok", oracle=checks.run_ok(60), concurrent=2, lock_pid=True, needs=("run",), timeout=150),
        A("concurrent.fresh_trains_same_runs_dir", "concurrent", None, TRAIN, "ok", oracle=checks.run_ok(2, count=2), concurrent=2,
          timeout=150),
        A("concurrent.samples_same_out", "concurrent", None, SAMPLE, "ok", oracle=checks.images_ok(), concurrent=2),
        A("concurrent.exports_same_out", "concurrent", None, EXPORT, "ok", oracle=checks.bundle_ok(), concurrent=2, timeout=240),
    ]
    return c


def all_cases() -> list[Attempt]:
    cases = (sample_cases() + run_cases() + eval_bench_cases() + export_cases() + train_cases() + model_dir_cases()
             + run_dir_cases() + bundle_cases() + kill_and_concurrency_cases())
    names = [a.name for a in cases]
    dupes = {n for n in names if names.count(n) > 1}
    assert not dupes, f"duplicate attempt names: {sorted(dupes)}"
    return cases
