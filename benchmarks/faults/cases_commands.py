"""Attempts of the numeric options and values of each command (sample, run, eval, bench, export, train)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from faults import checks
from faults.cases import (Attempt, Ctx, Setup, BENCH, EVAL, EXPORT, RUN, SAMPLE, SHORT, SPEC, TRAIN, VALUES, copy_bundle,
    copy_model, copy_run, delete, drop_one, edit_json, extra_tensor, flip, make_png, nan_all, on,
    rewrite_weights, sets, swap, then, truncate, user_files, vname, with_opt, write, wrong_shape)


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
    # "arch" is a label: the network is rebuilt from backbone + config and the weights are hash-checked, so
    # loading without it, or with a name no plugin registered (a user's own variant), gives the model's images
    ("config_missing_arch", [on("M/config.json", lambda p: edit_json(p, lambda d: d.pop("arch") and None))], "either"),
    ("config_missing_config", [on("M/config.json", lambda p: edit_json(p, lambda d: d.pop("config") and None))], "never"),
    ("config_config_string", [on("M/config.json", lambda p: edit_json(p, lambda d: {**d, "config": "abc"}))], "never"),
    ("config_arch_unknown", [on("M/config.json", lambda p: edit_json(p, lambda d: {**d, "arch": "nope"}))], "either"),
    ("config_arch_other_backbone", [on("M/config.json", lambda p: edit_json(p, lambda d: {**d, "arch": "nextstep1_tiny"}))],
     "never"),
    ("config_img_size_string", [on("M/config.json", lambda p: edit_json(p, lambda d: d["config"].update(img_size="abc")))], "never"),
    ("config_width_changed", [on("M/config.json", lambda p: edit_json(p, lambda d: d["config"].update(encoder_embed_dim=64)))], "never"),
    ("config_num_iter_0", [on("M/config.json", lambda p: edit_json(p, lambda d: d["config"]["sampling"].update(num_iter=0)))], "never"),
    ("config_cfg_nan", [on("M/config.json", lambda p: edit_json(p, lambda d: d["config"]["sampling"].update(cfg=float("nan"))))], "never"),
    ("config_format_99", [on("M/config.json", lambda p: edit_json(p, lambda d: {**d, "format": 99}))], "never"),
    ("card_deleted", [delete("M/card.json")], "either"),
    ("card_bad_json", [write("M/card.json", "{bad")], "either"),
    ("card_sha_changed", [on("M/card.json", lambda p: edit_json(p, lambda d: {**d, "sha256": "0" * 64}))], "never"),
]
