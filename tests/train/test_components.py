"""The training engine's parts on their own: optimiser groups, schedule, EMA, engine, objective,
checkpoint encoding, data order, metrics log, sample grid."""
from __future__ import annotations

import csv
import random

import numpy as np
import pytest
import torch
from torch import nn

from driftar_core.config import ConfigError
from driftar_core.train.checkpoint import (
    capture_rng,
    decode_state,
    encode_state,
    restore_rng,
)
from driftar_core.train.data import StepData
from driftar_core.train.ema import EMA
from driftar_core.train.engine import Engine
from driftar_core.train.objective import BaselineObjective
from driftar_core.train.recipes import make_objective
from driftar_core.train.optim import build_optimizer, param_groups, warmup_constant
from driftar_core.train.rundir import MetricsLog
from driftar_core.viz import grid_image


def test_weight_decay_only_on_matrices_outside_the_head(fake_bundle, make_config):
    groups = param_groups(fake_bundle, 0.02, no_decay=fake_bundle.head.parameters())
    names = {id(p): n for n, p in fake_bundle.named_parameters()}
    decay = {names[id(p)] for p in groups[0]["params"]}
    plain = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.02 and groups[1]["weight_decay"] == 0.0
    assert decay == {"backbone.tok.weight", "backbone.pos", "backbone.cls.weight", "backbone.mix.1.weight",
                     "backbone.mix.3.weight"}
    assert {"head.proj.weight", "head.proj.bias", "backbone.mix.0.weight", "backbone.tok.bias"} <= plain
    assert decay | plain == set(names.values())
    opt = build_optimizer(fake_bundle, make_config().optim)
    assert opt.defaults["betas"] == (0.9, 0.95)


def test_warmup_then_constant():
    f = warmup_constant(4)
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_constant(0)(0) == 1.0


def test_ema_update_and_state_dict():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.75)
    start = ema.module[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(3.0)
    ema.update(model)
    assert torch.allclose(ema.module[0].weight, start + 0.25)            # 0.75 * old + 0.25 * new
    assert torch.equal(ema.module[1].running_mean, torch.full((2,), 3.0))  # buffers are copied
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training
    other = EMA(model, decay=0.75)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.module[0].weight, ema.module[0].weight)


def test_single_process_engine(monkeypatch):
    engine = Engine.from_env("cpu", env={})
    assert (engine.rank, engine.world_size, engine.is_main, engine.distributed) == (0, 1, True, False)
    model = nn.Linear(2, 1)
    wrapped, _ = engine.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert wrapped is model and engine.unwrap(wrapped) is model
    assert engine.reduce_mean({"a": torch.tensor(2.0), "b": 3}) == {"a": 2.0, "b": 3.0}
    assert engine.all_gather_object({"x": 1}) == [{"x": 1}] and engine.broadcast_object(5) == 5
    engine.barrier()
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        Engine.from_env("cpu", env={"WORLD_SIZE": "2", "RANK": "0"})


def test_objective_selection(fake_bundle, make_config):
    cfg = make_config()
    assert isinstance(make_objective(cfg, fake_bundle), BaselineObjective)
    with pytest.raises(ConfigError, match="unknown training objective 'nope'.*baseline, draft, drift"):
        make_objective(cfg.model_copy(update={"recipe": "nope"}), fake_bundle)
    with pytest.raises(ConfigError, match="takes no method options"):
        make_objective(cfg.model_copy(update={"method": {"alpha0": 0.9}}), fake_bundle)
    custom = {"custom": lambda run_config, bundle: BaselineObjective(bundle)}       # a caller's own recipe
    assert isinstance(make_objective(cfg.model_copy(update={"recipe": "custom"}), fake_bundle, extra=custom),
                      BaselineObjective)


def test_baseline_objective_loss_and_gradients(fake_bundle):
    images, labels = torch.rand(4, 1, 16, 16) * 2 - 1, torch.tensor([0, 1, 2, 3])
    loss, metrics = BaselineObjective(fake_bundle)(images, labels)
    loss.backward()
    assert loss.ndim == 0 and torch.equal(metrics["head_loss"], loss.detach())
    assert all(p.grad is not None for p in fake_bundle.parameters())


def test_state_encoding_round_trips_optimizer_and_rng_state():
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    random.random(), np.random.rand(), torch.rand(1)
    state = {"optimizer": opt.state_dict(), "rng": [capture_rng()], "step": 5, "none": None}
    js, tensors = encode_state(state)
    import json
    back = decode_state(json.loads(json.dumps(js)), tensors)
    assert back["step"] == 5 and back["none"] is None
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.95)
    assert set(back["optimizer"]["state"]) == {0, 1}                     # int keys survive
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    expected = (random.random(), np.random.rand(), torch.rand(1))
    restore_rng(back["rng"][0])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    with pytest.raises(TypeError, match="cannot store object"):
        encode_state({"bad": object()})


def test_data_order_is_a_function_of_seed_epoch_and_step():
    ds = torch.utils.data.TensorDataset(torch.arange(50), torch.zeros(50, dtype=torch.long))
    data = StepData(ds, batch_size=8, seed=1)
    assert data.steps_per_epoch == 6 and data.position(13) == (2, 1)
    epoch2 = [b[0].tolist() for b in data.epoch_loader(2)]
    assert [b[0].tolist() for b in data.epoch_loader(2, start=1)] == epoch2[1:]     # mid-epoch resume
    assert epoch2 == [b[0].tolist() for b in StepData(ds, 8, seed=1).epoch_loader(2)]
    assert epoch2 != [b[0].tolist() for b in data.epoch_loader(3)]
    rank_batches = [[b[0] for b in StepData(ds, 5, seed=1, rank=r, world_size=2).epoch_loader(0)] for r in (0, 1)]
    assert not set(torch.cat(rank_batches[0]).tolist()) & set(torch.cat(rank_batches[1]).tolist())
    with pytest.raises(ValueError, match="batch_size"):
        StepData(ds, batch_size=64, seed=1)


def test_metrics_log_widens_header_and_truncates_on_resume(tmp_path):
    path = tmp_path / "metrics.csv"
    log = MetricsLog(path)
    log.log({"step": 1, "loss": 0.5})
    log.log({"step": 2, "loss": 0.4, "extra": 1.0})
    log.log({"step": 3, "loss": 0.3})
    MetricsLog(path, resume_step=2).log({"step": 3, "loss": 0.25})
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["loss"], r["extra"]) for r in rows] == [("1", "0.5", ""), ("2", "0.4", "1"), ("3", "0.25", "")]


def test_grid_layout():
    images = torch.linspace(-1, 1, 6)[:, None, None, None].expand(6, 1, 16, 16)
    img = grid_image(images, rows=2)                                        # 2 rows x 3 columns, x4
    assert img.size == ((3 * 17 - 1) * 4, (2 * 17 - 1) * 4) and img.mode == "L"
    px = np.asarray(img)
    assert px[0, 0] == 0 and px[-1, -1] == 255                              # first image -1, last +1
    assert grid_image(torch.zeros(4, 3, 8, 8), rows=2).mode == "RGB"


def test_ema_warmup_forgets_the_initial_weights():
    from torch import nn

    from driftar_core.train.ema import EMA
    plain, warm = EMA(nn.Linear(2, 2), 0.999), EMA(nn.Linear(2, 2), 0.999, warmup=True)
    assert plain.decay_at(0) == 0.999
    assert warm.decay_at(0) == 0.1 and warm.decay_at(10 ** 6) == 0.999
    model = nn.Linear(2, 2)
    warm = EMA(model, 0.999, warmup=True)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for t in range(100):
        warm.update(model, t)
    # the product of the decays is ~1e-2 after 100 warm-up steps (a plain 0.999 EMA keeps 90% of the init)
    assert torch.allclose(warm.module.weight, torch.ones(2, 2), atol=0.05)


def test_a_recipe_runs_the_objective_it_names(fake_bundle, make_config):
    from driftar_core.plugins import registries
    from driftar_core.train.objective import BaselineObjective
    from driftar_core.train.recipes import make_objective, objective_name
    reg = registries()
    reg.recipe_callback("test")("mar", "warmup", "w.toml", objective="baseline")
    try:
        cfg = make_config().model_copy(update={"backbone": "mar", "recipe": "warmup"})
        assert objective_name(cfg) == "baseline" and isinstance(make_objective(cfg, fake_bundle), BaselineObjective)
    finally:
        reg.recipes._entries.pop("mar/warmup")
