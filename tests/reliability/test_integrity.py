"""Every model directory driftar writes records hashes, and every load path verifies them; damaged,
malformed or non-finite models are errors that name the file, never images."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from cli_runner import run_cli
from driftar_core.bundle import CheckpointError, NonFiniteError, load_bundle
from driftar_core.files import sha256_file
from driftar_core.plugins import registries
from driftar_core.train import train


def _zoo_copy(tmp_path, name="mar_tiny_drift.digits"):
    return shutil.copytree(registries().cards.get(name).directory, tmp_path / name)


def _overwrite(path, offset=1000, count=400):
    data = bytearray(path.read_bytes())
    data[offset:offset + count] = bytes(count)
    path.write_bytes(bytes(data))


def test_a_zoo_copy_loaded_by_path_checks_its_card(tmp_path, capsys):
    model = _zoo_copy(tmp_path)
    _overwrite(model / "model.safetensors", offset=len((model / "model.safetensors").read_bytes()) - 2000)
    code, _, err = run_cli(["sample", "-c", str(model), "-n", "1", "--out", str(tmp_path / "g.png")], capsys)
    assert code == 2 and "corrupt" in err and "sha256" in err and not (tmp_path / "g.png").exists()


def test_a_saved_bundle_records_and_checks_its_weights_hash(tmp_path, fake_plugin, fake_bundle):
    d = fake_bundle.save(tmp_path / "m")
    rec = json.loads((d / "config.json").read_text())["files"]["model.safetensors"]
    assert rec["sha256"] == sha256_file(d / "model.safetensors")
    load_bundle(d)
    _overwrite(d / "model.safetensors", offset=200, count=64)
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt"):
        load_bundle(d)


def test_sampling_a_checkpoint_checks_its_state_json(tmp_path, capsys, make_config, fake_plugin, fake_bundle):
    run = train(make_config(steps=2, log_every=1, sample_every=0, ckpt_every=1), bundle=fake_bundle, progress=False)
    step = run / "checkpoints" / "step-0000002"
    # the EMA weights AND config.json's record rewritten consistently: only state.json can tell
    sd = load_file(step / "model.safetensors")
    save_file({k: v + 1 for k, v in sd.items()}, step / "model.safetensors")
    cfg = json.loads((step / "config.json").read_text())
    cfg["files"]["model.safetensors"] = {"size": (step / "model.safetensors").stat().st_size,
                                         "sha256": sha256_file(step / "model.safetensors")}
    (step / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_cli(["sample", "-c", str(step), "-n", "1", "--out", str(tmp_path / "g.png")], capsys)
    assert code == 2 and "state.json" in err


def test_a_directory_without_any_hash_loads_with_a_note(tmp_path, capsys, fake_plugin, fake_bundle):
    d = fake_bundle.save(tmp_path / "old")
    cfg = json.loads((d / "config.json").read_text())
    del cfg["files"]
    (d / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_cli(["sample", "-c", str(d), "-n", "1", "--out", str(tmp_path / "g.png")], capsys)
    assert code == 0 and "records no hash" in err


@pytest.mark.parametrize("text, needle", [
    ("{not json", "is not valid JSON"),
    ('{"format": 1}', "needs 'backbone'"),
    ('[1, 2]', "must hold a JSON object"),
    ('{"arch": "mar_tiny", "backbone": "mar", "config": {"img_size": "big"}}', "img_size"),
])
def test_a_malformed_config_json_is_a_clear_error(tmp_path, capsys, text, needle):
    model = _zoo_copy(tmp_path)
    (model / "config.json").write_text(text)
    code, _, err = run_cli(["sample", "-c", str(model), "-n", "1", "--out", str(tmp_path / "g.png")], capsys)
    assert code == 2 and needle in err and "Traceback" not in err


def test_non_finite_weights_are_refused_on_every_load_path(tmp_path, capsys, fake_plugin, fake_bundle):
    d = fake_bundle.save(tmp_path / "m")
    sd = load_file(d / "model.safetensors")
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in sd.items()},
              d / "model.safetensors")
    cfg = json.loads((d / "config.json").read_text())          # a consistent hash: only the NaN check can tell
    cfg["files"]["model.safetensors"]["sha256"] = sha256_file(d / "model.safetensors")
    cfg["files"]["model.safetensors"]["size"] = (d / "model.safetensors").stat().st_size
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(NonFiniteError, match="NaN or inf"):
        load_bundle(d)
    code, _, err = run_cli(["sample", "-c", str(d), "-n", "1", "--out", str(tmp_path / "g.png")], capsys)
    assert code == 2 and "NaN or inf" in err and not (tmp_path / "g.png").exists()
    with pytest.raises(NonFiniteError):
        fake_bundle.backbone.pos.data.fill_(float("inf"))
        fake_bundle.save(tmp_path / "never")                    # nor are they saved


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c.update(backbone="nope"), "nope"),
    (lambda c: c.update(arch="nextstep1_tiny"), "the file was edited"),
    (lambda c: c.update(format=99), "model format 99"),
])
def test_an_edited_config_json_is_refused(tmp_path, capsys, edit, needle):
    model = _zoo_copy(tmp_path)
    cfg = json.loads((model / "config.json").read_text())
    edit(cfg)
    (model / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_cli(["sample", "-c", str(model), "-n", "1", "--out", str(tmp_path / "g.png")], capsys)
    assert code == 2 and needle in err


def test_an_edited_state_json_is_refused(tmp_path, make_config, fake_plugin, fake_bundle):
    run = train(make_config(steps=2, log_every=1, sample_every=0, ckpt_every=2), bundle=fake_bundle, progress=False)
    meta_path = run / "checkpoints" / "step-0000002" / "state.json"
    meta = json.loads(meta_path.read_text())
    meta["step"] = 99                                           # the files it lists are untouched
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="edited or damaged"):
        train(make_config(steps=4), bundle=fake_bundle, resume=str(run), progress=False)
