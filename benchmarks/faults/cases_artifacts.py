"""Attempts on damaged artifacts (model dirs, runs, export bundles), kills and concurrent writers."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

from faults import checks
from faults.cases import (Attempt, Ctx, Setup, BENCH, EVAL, EXPORT, RUN, SAMPLE, SPEC, TRAIN, copy_bundle, copy_model,
    copy_run, delete, edit_json, flip, make_png, nan_all, on, rewrite_weights, sets, swap, then, truncate,
    with_opt, write)
from faults.cases_commands import MODEL_CORRUPTIONS, resumed_from


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
