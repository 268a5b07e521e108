"""A destination that cannot be written fails BEFORE the work, naming the path the user gave."""
from __future__ import annotations

import pytest

from cli_runner import run_cli


@pytest.fixture
def no_work(monkeypatch):
    import driftar_core.resolve as resolve

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the destination was checked")
    monkeypatch.setattr(resolve, "load_model", refuse)


@pytest.mark.parametrize("argv, out", [
    (["sample", "-c", "mar_tiny_drift.digits", "-n", "1", "--out"], "afile/g.png"),
    (["sample", "-c", "mar_tiny_drift.digits", "-n", "1", "--out"], "adir"),
    (["eval", "-m", "mar_tiny_drift.digits", "--json"], "afile/r.json"),
    (["bench", "-m", "mar_tiny_drift.digits", "--markdown"], "afile/b.md"),
])
def test_unwritable_outputs_fail_before_the_work(argv, out, tmp_path, capsys, no_work, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("a file, not a directory")
    (tmp_path / "adir").mkdir()
    code, _, err = run_cli([*argv, out], capsys)
    assert code == 2 and out.split("/")[0] in err and ".tmp" not in err and "Traceback" not in err
    assert (tmp_path / "afile").read_text() == "a file, not a directory"


def test_a_runs_dir_under_a_file_fails_before_training(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(["train", "--backbone", "mar", "--recipe", "baseline",
                            "--set", f"train.runs_dir={tmp_path / 'afile' / 'runs'}"], capsys)
    assert code == 2 and "is a file, not a directory" in err
