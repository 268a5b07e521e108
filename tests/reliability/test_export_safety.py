"""Export bundles and ``driftar run``: no lost files, verified bytes, confined paths, one-line errors.

One tiny MAR model is exported ONCE through ``driftar export`` (module fixture); every test that damages a
bundle works on a copy. Checks that must happen before any work patch the expensive step to fail.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_runner import run_cli  # tests/cli_runner.py

EXPORT_TESTS = Path(__file__).resolve().parents[1] / "export"
MAX_BATCH = 2


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_reliability_{name}", EXPORT_TESTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``driftar export`` of a tiny MAR model into ROOT/bundle, with a dead and a live writer's temporary beside it."""
    from driftar_core.cli import main
    from driftar_mar.build import build_mar
    from driftar_mar.config import MARConfig
    small = _load("conftest")
    root = tmp_path_factory.mktemp("reliability_export")
    torch.manual_seed(0)
    model = small.perturb(build_mar(MARConfig(**small.MAR_SMALL)), 0).save(root / "model")
    dead = root / f".bundle.tmp-{dead_pid()}-abc"
    live = root / f".bundle.tmp-{os.getpid()}-x"
    for d in (dead, live):
        d.mkdir()
        (d / "graphs").mkdir()
        (d / "graphs" / "half.onnx").write_bytes(b"partial")
    try:
        main(["export", "--model", str(model), "--target", "onnx", "--out", str(root / "bundle"),
              "--set", f"max_batch={MAX_BATCH}", "--threads", "1"])
    except SystemExit as e:
        assert not e.code, f"driftar export failed with exit code {e.code}"
    return types.SimpleNamespace(root=root, model=model, bundle=root / "bundle", dead=dead, live=live)


@pytest.fixture
def bundle(exported, tmp_path):
    return Path(shutil.copytree(exported.bundle, tmp_path / "bundle"))


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the destination was checked")
    monkeypatch.setattr("driftar_core.resolve.load_model", refuse)


@pytest.fixture
def no_runner(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the bundle was loaded before the arguments were checked")
    monkeypatch.setattr("driftar_export.runtime.runner.Runner.__init__", refuse)


def edit_manifest(directory: Path, change, digest: bool = True) -> dict:
    """Edit manifest.json; ``digest`` re-signs it, so the checks behind the digest are what must catch it."""
    from driftar_core.files import with_digest
    m = json.loads((directory / "manifest.json").read_text())
    change(m)
    (directory / "manifest.json").write_text(json.dumps(with_digest(m) if digest else m))
    return m


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0, err
    assert "Traceback" not in err and "Error: " in err, err
    for n in needles:
        assert n.lower() in err.lower(), (n, err)


def export_argv(exported, out) -> list[str]:
    return ["export", "--model", str(exported.model), "--target", "onnx", "--out", str(out), "--threads", "1"]


# ---- 1. never replace a directory the export did not write --------------------------------------------


def test_export_refuses_a_project_with_its_own_manifest(exported, tmp_path, capsys, no_model_load):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "manifest.json").write_text('{"name": "app"}')
    (proj / "src" / "important.txt").write_text("keep")
    code, _, err = run_cli(export_argv(exported, proj), capsys)
    one_line_error(code, err, str(proj), "not an export bundle", "new or empty directory")
    assert (proj / "src" / "important.txt").read_text() == "keep"
    assert json.loads((proj / "manifest.json").read_text()) == {"name": "app"}


def test_export_refuses_a_bundle_holding_foreign_files(exported, bundle, capsys, no_model_load):
    (bundle / "notes.txt").write_text("mine")
    (bundle / "graphs" / "extra.onnx").write_bytes(b"mine too")
    code, _, err = run_cli(export_argv(exported, bundle), capsys)
    one_line_error(code, err, str(bundle), "graphs/extra.onnx", "notes.txt", "new or empty directory")
    assert (bundle / "notes.txt").read_text() == "mine" and (bundle / "graphs" / "extra.onnx").is_file()


def test_own_bundles_old_and_new_stay_replaceable(bundle):
    from driftar_export.destination import check_out_dir
    (bundle / "ort_trt_cache").mkdir()
    (bundle / "ort_trt_cache" / "x.engine").write_bytes(b"ep cache")        # the TensorRT EP's run-time cache
    check_out_dir(bundle)
    edit_manifest(bundle, lambda m: m.pop("files"))                         # exported before the inventory
    check_out_dir(bundle)


def test_tensorrt_target_never_deletes_foreign_files(exported, bundle, tiny_mar_bundle_module, monkeypatch):
    from driftar_export.options import ExportError
    from driftar_export.targets import TensorRTExporter
    monkeypatch.setattr("driftar_export.tensorrt.build.preflight", lambda: (None, {}))
    monkeypatch.setattr("driftar_export.tensorrt.build.build_engines", lambda *a, **k: {})
    edit_manifest(bundle, lambda m: m["model"].update(weights_sha256="other"))  # forces a fresh ONNX export
    (bundle / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="notes.txt"):
        TensorRTExporter()(tiny_mar_bundle_module, bundle, log=lambda s: None)
    assert (bundle / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def tiny_mar_bundle_module(exported):
    from driftar_core.resolve import load_model
    return load_model(str(exported.model))


# ---- 2. hashes ----------------------------------------------------------------------------------------


def test_manifest_records_every_file_and_a_flipped_graph_is_refused(exported, bundle, capsys, tmp_path):
    from driftar_core.files import sha256_file
    from driftar_export.manifest import BundleError
    from driftar_export.runtime.runner import Runner
    files = json.loads((exported.bundle / "manifest.json").read_text())["files"]
    on_disk = {p.relative_to(exported.bundle).as_posix() for p in exported.bundle.rglob("*") if p.is_file()}
    assert set(files) == on_disk - {"manifest.json"}
    assert {"config.json", "README.md", "graphs/decoder.onnx"} <= set(files)
    assert all(sha256_file(exported.bundle / rel) == r["sha256"] for rel, r in files.items())
    path = bundle / "graphs" / "decoder.onnx"
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 2048] = bytes(b ^ 0xFF for b in data[mid:mid + 2048])     # 2 kB flipped inside the weights
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"decoder\.onnx.*(?s:.*)[Rr]e-export"):
        Runner(bundle)
    code, _, err = run_cli(["run", "--bundle", str(bundle), "-n", "1", "--out", str(tmp_path / "g.png")], capsys)
    one_line_error(code, err, "decoder.onnx", "re-export")
    assert not (tmp_path / "g.png").exists()


def test_bundle_without_hashes_loads_with_one_warning(bundle, capsys):
    from driftar_export.runtime.runner import Runner
    edit_manifest(bundle, lambda m: m.pop("files"))
    capsys.readouterr()
    Runner(bundle, threads=1)
    warning = [line for line in capsys.readouterr().err.splitlines() if "hashes" in line]
    assert len(warning) == 1 and str(bundle) in warning[0] and "re-export" in warning[0]


# ---- 3. confinement -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["graph", "files", "engine"])
@pytest.mark.parametrize("rel", ["../../../../etc/passwd", "/etc/passwd"])
def test_manifest_paths_outside_the_bundle_are_refused(bundle, where, rel):
    from driftar_export.manifest import BundleError
    from driftar_export.runtime.runner import Runner

    def change(m):
        if where == "graph":
            m["graphs"]["decoder"]["file"] = rel
        elif where == "files":
            m["files"][rel] = {"size": 1, "sha256": "0"}
        else:
            m["tensorrt"] = {"engines": {"decoder": {"file": rel}}}
    edit_manifest(bundle, change)
    with pytest.raises(BundleError, match="points outside|is not a relative path"):
        Runner(bundle)


# ---- 4. one-line errors instead of tracebacks ---------------------------------------------------------


@pytest.mark.parametrize("args, option", [
    (["-n", "0"], "-n"), (["-n", "-3"], "-n"), (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-1"], "--batch-size"), (["--threads", "0"], "--threads"), (["--threads", "-1"], "--threads"),
    (["--cfg", "nan"], "--cfg"), (["--temperature", "-1"], "--temperature"), (["--kappa", "-1"], "--kappa"),
    (["--draft-len", "0"], "--draft-len"), (["--num-iter", "0"], "--num-iter")])
def test_run_refuses_bad_numbers_before_loading(exported, args, option, capsys, tmp_path, no_runner):
    code, _, err = run_cli(["run", "--bundle", str(exported.bundle), "--out", str(tmp_path / "g.png"), *args], capsys)
    one_line_error(code, err, option)


@pytest.mark.parametrize("args, needle", [(["--threads", "0"], "--threads"), (["--threads", "-1"], "--threads"),
                                          (["--set", "max_batch=0"], "max_batch")])
def test_export_refuses_bad_numbers_before_loading(exported, args, needle, capsys, tmp_path, no_model_load):
    code, _, err = run_cli([*export_argv(exported, tmp_path / "out"), *args], capsys)
    one_line_error(code, err, needle)
    assert not (tmp_path / "out").exists()


def test_batch_above_the_bundle_bound_names_it(exported, capsys, tmp_path):
    code, _, err = run_cli(["run", "--bundle", str(exported.bundle), "-n", "4", "--batch-size", "3", "--out",
                            str(tmp_path / "g.png")], capsys)
    one_line_error(code, err, f"max_batch={MAX_BATCH}", "--set max_batch=3")
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m["graphs"]["decoder"]["inputs"][0].update(shape=["rows"]), "decoder"),          # a dim removed
    (lambda m: m["graphs"]["decoder"]["inputs"][0].update(shape=["rows", 97]), "decoder"),      # a dim changed
    (lambda m: m["graphs"]["decoder"]["dims"].pop("rows"), "rows"),                             # bounds removed
    (lambda m: m["graphs"]["decoder"]["inputs"][0].update(shape="rows"), "decoder")])
def test_edited_manifest_shapes_are_a_bundle_error(bundle, edit, needle, capsys, tmp_path):
    from driftar_export.manifest import BundleError
    from driftar_export.runtime.runner import Runner
    edit_manifest(bundle, edit)
    with pytest.raises(BundleError, match=needle):
        Runner(bundle)
    code, _, err = run_cli(["run", "--bundle", str(bundle), "-n", "1", "--out", str(tmp_path / "g.png")], capsys)
    one_line_error(code, err, needle, "re-export")


def test_damaged_graph_with_matching_hashes_is_a_clear_error(bundle, capsys, tmp_path):
    from driftar_core.files import file_record
    from driftar_export.manifest import BundleError
    from driftar_export.runtime.runner import Runner
    path = bundle / "graphs" / "detokenize.onnx"
    path.write_bytes(b"\x00garbage header" * 8 + path.read_bytes()[128:])
    edit_manifest(bundle, lambda m: m["files"].update({"graphs/detokenize.onnx": file_record(path)}))
    with pytest.raises(BundleError, match="ONNX Runtime cannot load graph detokenize"):
        Runner(bundle)
    code, _, err = run_cli(["run", "--bundle", str(bundle), "-n", "1", "--out", str(tmp_path / "g.png")], capsys)
    one_line_error(code, err, "detokenize.onnx", "re-export")


# ---- 5. destinations checked before the work ----------------------------------------------------------


def test_run_out_under_a_file_fails_before_loading(exported, capsys, tmp_path, no_runner):
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(["run", "--bundle", str(exported.bundle), "--out", str(tmp_path / "afile" / "g.png")],
                           capsys)
    one_line_error(code, err, "--out", "afile")


def test_export_out_under_a_file_fails_before_loading(exported, capsys, tmp_path, no_model_load):
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(export_argv(exported, tmp_path / "afile" / "bundle"), capsys)
    one_line_error(code, err, "--out", "afile", "is a file")


# ---- 6. temporaries of killed exports -----------------------------------------------------------------


def test_export_removes_dead_writers_temporaries_only(exported):
    assert not exported.dead.exists()                                       # its writer is gone
    assert (exported.live / "graphs" / "half.onnx").is_file()               # a live writer's is never touched
    left = sorted(p.name for p in exported.root.iterdir() if p.name.startswith(".bundle."))
    assert left == [exported.live.name]


# ---- 7. non-finite images -----------------------------------------------------------------------------


def test_non_finite_images_are_an_error_not_a_grid(exported, capsys, tmp_path, monkeypatch):
    from driftar_export.runtime.graphs import OrtGraphs
    run = OrtGraphs.run

    def nan_images(self, role, feeds):
        out = run(self, role, feeds)
        if role == "detokenize":
            out["images"] = np.full_like(out["images"], np.nan)
        return out
    monkeypatch.setattr(OrtGraphs, "run", nan_images)
    code, _, err = run_cli(["run", "--bundle", str(exported.bundle), "-n", "1", "--out", str(tmp_path / "g.png")],
                           capsys)
    one_line_error(code, err, "non-finite")
    assert not (tmp_path / "g.png").exists()


def test_tensorrt_build_records_and_verifies_engines(bundle):
    from driftar_export.destination import check_out_dir
    from driftar_export.manifest import BundleError, read_manifest
    from driftar_export.options import TensorRTOptions
    from driftar_export.tensorrt.build import build_engines
    fake = _load("test_tensorrt")
    build_engines(bundle, TensorRTOptions(), trt=fake.fake_tensorrt("10.13.0"), gpu=fake.GPU, log=lambda s: None)
    files = read_manifest(bundle)["files"]
    assert {"engines/decoder.engine", "engines/timing.cache", "graphs/decoder.onnx"} <= set(files)
    check_out_dir(bundle)                                                    # everything in it is the bundle's
    (bundle / "engines" / "decoder.engine").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="decoder.engine"):
        read_manifest(bundle)


@pytest.mark.parametrize("edit", [
    lambda m: m["model"].update(image_shape=[3, 32, 32]),
    lambda m: m["parity"].update(passed=False),
    lambda m: m["sampler"].update(cfg=7.0),
])
def test_an_edited_manifest_is_refused_by_its_digest(bundle, edit):
    from driftar_export.manifest import BundleError
    from driftar_export.runtime.runner import Runner
    edit_manifest(bundle, edit, digest=False)
    with pytest.raises(BundleError, match="edited or damaged"):
        Runner(bundle)


def test_a_manifest_that_records_failed_parity_is_refused(bundle):
    from driftar_export.manifest import BundleError
    from driftar_export.runtime.runner import Runner
    edit_manifest(bundle, lambda m: m["parity"].update(passed=False))
    with pytest.raises(BundleError, match="failed parity"):
        Runner(bundle)


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m["model"].update(class_num=0), "class_num"),
    (lambda m: m["model"].update(token_shape=[64]), "token_shape"),
])
def test_manifest_model_fields_are_checked(bundle, edit, needle):
    from driftar_export.manifest import BundleError
    from driftar_export.runtime.runner import Runner
    edit_manifest(bundle, edit)
    with pytest.raises(BundleError, match=needle):
        Runner(bundle)
