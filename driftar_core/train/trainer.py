"""The training loop: ``train(run_config) -> run directory``, one process or many under torchrun.

    engine    = Engine.from_env()                       # DDP when WORLD_SIZE > 1 (gloo CPU / nccl GPU)
    bundle    = create_model(model.arch, **model.args)  # or the bundle passed in
    objective = make_objective(run_config, bundle)      # recipe -> nn.Module: (images, labels) -> loss
    model, optimizer = engine.setup(objective, AdamW)   # forward goes THROUGH the DDP wrapper
    for step in range(start, steps):                    # data order = f(seed, epoch): resumable mid-epoch
        loss = model(images, labels); backward; clip; optimizer; scheduler; EMA
        log / sample grid (EMA, fixed seed) / checkpoint           (rank 0 writes, then a barrier)

Resume (``resume="latest"`` or a path) restores the live and EMA weights, optimizer, scheduler, step
and every rank's python/numpy/torch RNG, and replays the data order from the step, so on CPU
N steps + save + resume + N steps equals 2N steps bit for bit. A missing or corrupt checkpoint fails
before anything is built or written. Sampling and logging never draw from the training RNG.
Shape of the reference loops: nanoGPT's train.py, MAR's engine_mar.py, timm's train.py.
"""
from __future__ import annotations

import json
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from driftar_core.bundle import load_safetensors, load_state_strict, verify_model_dir
from driftar_core.files import RunLock, clean_stale_temps, make_temp_dir, swap_dir
from driftar_core.train.checkpoint import (
    Checkpoint,
    capture_rng,
    load_checkpoint,
    prune_checkpoints,
    resolve_resume,
    restore_rng,
    save_checkpoint,
)
from driftar_core.train.data import StepData, build_dataset
from driftar_core.train.ema import EMA
from driftar_core.train.engine import Engine
from driftar_core.train.recipes import make_objective
from driftar_core.train.optim import build_optimizer, build_scheduler, clip_gradients
from driftar_core.train.rundir import (
    BASE_COLUMNS,
    CONFIG,
    ENV,
    METRICS,
    MetricsLog,
    collect_env,
    diff_keys,
    new_run_dir,
    write_record,
)
from driftar_core.viz import save_grid


def train(run_config: Any, bundle: nn.Module | None = None, resume: str | None = None,
          progress: bool | None = None) -> Path:
    """Train ``run_config`` (a :class:`driftar_core.config.RunConfig`) and return the run directory.

    bundle: a ModelBundle to train in place; by default ``create_model(model.arch, **model.args)``.
    resume: ``"latest"`` (newest run ``<runs_dir>/<backbone>/*-<name>``), a run directory or a
        checkpoint directory; training continues in that run's directory up to ``train.steps``.
    progress: True = tqdm bar, False = plain log lines, None = a bar only on a terminal.
    """
    ckpt = None
    if resume is not None:   # read and verify first: a bad checkpoint fails before anything happens
        ckpt = load_checkpoint(resolve_resume(resume, run_config.train.runs_dir, run_config.backbone,
                                              run_config.train.name))
        if run_config.train.steps < ckpt.step:
            from driftar_core.config import ConfigError
            raise ConfigError(f"train.steps ({run_config.train.steps}) is below the step of the checkpoint to resume "
                              f"({ckpt.step}, {ckpt.path}); set train.steps to the total to reach, e.g. "
                              f"--set train.steps={ckpt.step + run_config.train.steps}")
    engine = Engine.from_env(run_config.train.device)
    threads = torch.get_num_threads()
    trainer = None
    try:
        trainer = Trainer(run_config, engine, bundle, ckpt, progress)
        return trainer.fit()
    finally:
        torch.set_num_threads(threads)         # train.threads is for this run, not the caller's process
        if trainer is not None and trainer.lock is not None:
            trainer.lock.release()
        engine.close()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices). timm's ``random_seed(seed, rank)`` is ``seed + rank``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolved_config(run_config: Any, bundle: nn.Module) -> dict[str, Any]:
    """The RunConfig with ``model.args`` = the bundle's FULL validated config (rebuilds the same model)."""
    data = run_config.model_dump(mode="json")
    data["model"]["args"] = bundle.config.model_dump(mode="json")
    if bundle.arch:
        data["model"]["arch"] = bundle.arch
    return data


def build_bundle(run_config: Any) -> nn.Module:
    """``create_model(model.arch, **model.args)``, then ``model.init_from`` weights (bundle or run dir).

    What loads is the recipe's declared ``loads`` (``driftar_core.registry.RecipeSpec``): ``"all"``;
    ``"backbone"`` (Drift-AR from a trained BASELINE: its tokenizer and backbone load strictly, its head,
    a different one, is dropped, and the drift components (frozen phi, draft) are then copied from the
    loaded target, docs/method.md "Two-phase training"); ``"all_but_draft"`` (a draft distilled afresh from a trained model).
    """
    from driftar_core.factory import create_model
    from driftar_core.plugins import registries
    from driftar_core.resolve import find_model_dir
    spec = registries().recipe_of(run_config.backbone, run_config.recipe)
    bundle = create_model(run_config.model.arch, **run_config.model.args)
    src = run_config.model.init_from
    if src:
        model_dir = find_model_dir(src)                         # run dir / bundle dir, or None for a name
        if model_dir is not None:
            verify_model_dir(model_dir)
            weights = load_safetensors(model_dir / "model.safetensors")
        else:
            weights = create_model(src).state_dict()            # a zoo name (arch.tag)
        if spec.loads == "all_but_draft":                        # a trained model; a fresh draft
            own = {k: v for k, v in bundle.state_dict().items() if k.startswith("draft.")}
            weights = {**{k: v for k, v in weights.items() if not k.startswith("draft.")}, **own}
            load_state_strict(bundle, weights, f"model.init_from={src} (all but the draft)")
        elif spec.loads == "backbone":                           # a trained baseline's backbone
            from driftar_core.method.objective import prepare_drift
            keep = ("backbone.", "tokenizer.")
            own = {k: v for k, v in bundle.state_dict().items() if not k.startswith(keep)}
            weights = {**own, **{k: v for k, v in weights.items() if k.startswith(keep)}}
            load_state_strict(bundle, weights, f"model.init_from={src} (backbone)")
            prepare_drift(bundle)
        else:
            load_state_strict(bundle, weights, f"model.init_from={src}")
    elif spec.after is not None:
        from driftar_core.config import ConfigError
        raise ConfigError(f"the {spec.name} recipe starts from a trained {spec.after} model: set model.init_from to a "
                          f"{spec.after} run directory or zoo name (driftar train --backbone {spec.backbone} "
                          f"--recipe {spec.name} trains it first for you)")
    return bundle


class _Window:
    """Sums of the logged quantities since the last log line (tensors: no device sync per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.t0 = time.perf_counter()
        self.paused = 0.0       # seconds spent on samples and checkpoints, left out of it/s

    def seconds(self) -> float:
        return max(time.perf_counter() - self.t0 - self.paused, 1e-9)

    def add(self, values: dict[str, Tensor]) -> None:
        for k, v in values.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += 1


class Trainer:
    """One run's objects; ``fit()`` runs the loop. Built by :func:`train`."""

    def __init__(self, cfg: Any, engine: Engine, bundle: nn.Module | None, ckpt: Checkpoint | None,
                 progress: bool | None):
        self.cfg, self.engine, t = cfg, engine, cfg.train
        self.lock: RunLock | None = None            # rank 0 holds the run directory's lock (_open_run_dir)
        if t.threads:
            torch.set_num_threads(t.threads)
        seed_everything(t.seed)                    # identical initialisation on every rank
        self.bundle = bundle if bundle is not None else build_bundle(cfg)
        self.bundle.to(engine.device).train()
        if ckpt is not None:
            load_state_strict(self.bundle, ckpt.raw_weights, f"{ckpt.path}/raw.safetensors")
        dataset = build_dataset(cfg.data.dataset, split="train", image_size=cfg.data.image_size, root=cfg.data.root)
        self.data = StepData(dataset, cfg.data.batch_size, seed=t.seed, rank=engine.rank,
                             world_size=engine.world_size, num_workers=cfg.data.num_workers,
                             pin_memory=engine.device.type == "cuda")
        self.objective = make_objective(cfg, self.bundle)
        optimizer = build_optimizer(self.objective, cfg.optim, no_decay=self.bundle.head.parameters())
        self.model, self.optimizer = engine.setup(self.objective, optimizer,
                                                  find_unused_parameters=self.objective.find_unused_parameters)
        self.params = [p for p in self.objective.parameters() if p.requires_grad]
        self.scheduler = build_scheduler(self.optimizer, cfg.optim)
        self.ema = EMA(self.bundle, cfg.optim.ema_decay, cfg.optim.ema_warmup)   # after setup: DDP has synced the weights
        self.step, self.lr = 0, self.optimizer.param_groups[0]["lr"]
        if ckpt is not None:
            self.ema.load_state_dict(ckpt.ema_weights)
            self.optimizer.load_state_dict(ckpt.state["optimizer"])
            self.scheduler.load_state_dict(ckpt.state["scheduler"])
            self.step = ckpt.step
        seed_everything(t.seed + engine.rank)      # per-rank training randomness (timm random_seed)
        notes = self._restore_rng(ckpt) if ckpt is not None else []
        self.run_dir = Path(engine.broadcast_object(str(self._open_run_dir(ckpt)) if engine.is_main else None))
        self.use_bar = engine.is_main and (sys.stderr.isatty() if progress is None else progress)
        for note in notes:
            self._say(note)

    # ---------------------------------------------------------------------------------------------
    # Setup helpers
    # ---------------------------------------------------------------------------------------------

    def _restore_rng(self, ckpt: Checkpoint) -> list[str]:
        """This rank's RNG from the checkpoint; warnings when the run's shape changed."""
        notes, st, ws = [], ckpt.state, self.engine.world_size
        if st.get("world_size") == ws and len(st.get("rng", [])) == ws:
            restore_rng(st["rng"][self.engine.rank])
        else:
            notes.append(f"warning: checkpoint was written with world size {st.get('world_size')}, now {ws}: "
                         "RNG restarts from train.seed + rank and the run is not bitwise reproducible")
        if st.get("batch_size") != self.cfg.data.batch_size:
            notes.append(f"warning: data.batch_size changed from {st.get('batch_size')} to "
                         f"{self.cfg.data.batch_size}: the data order differs from the original run")
        return notes

    def _open_run_dir(self, ckpt: Checkpoint | None) -> Path:
        """Rank 0: a new run directory, or the resumed run's; records config.json and env.json."""
        t, step = self.cfg.train, self.step
        run_dir = ckpt.run_dir if ckpt is not None else new_run_dir(t.runs_dir, self.cfg.backbone, t.name)
        self.lock = RunLock(run_dir).acquire()        # one writer per run: a second one fails naming this PID
        try:
            for where in (run_dir, run_dir / "checkpoints", run_dir / "samples"):
                for p in clean_stale_temps(where):
                    print(f"removed {p}, left by an interrupted driftar process", flush=True)
            resolved = resolved_config(self.cfg, self.bundle)
            if ckpt is not None and (run_dir / CONFIG).is_file():
                changed = diff_keys(_read_json(run_dir / CONFIG), resolved)
                if changed:
                    print(f"resume: config differs from {run_dir / CONFIG} in {', '.join(changed)}; "
                          f"recorded as config.resume-step-{step:07d}.json", flush=True)
            write_record(run_dir, CONFIG, resolved, step)
            write_record(run_dir, ENV, collect_env(self.engine.device, self.engine.world_size,
                                                   self.engine.backend), step)
            self.metrics = MetricsLog(run_dir / METRICS, resume_step=step if ckpt is not None else None)
        except BaseException:
            self.lock.release()
            raise
        return run_dir

    # ---------------------------------------------------------------------------------------------
    # The loop
    # ---------------------------------------------------------------------------------------------

    def fit(self) -> Path:
        total, eng = self.cfg.train.steps, self.engine
        self._say(f"driftar train: {self.run_dir} | {self.bundle.num_params():,} params | "
                  f"world size {eng.world_size} on {eng.device} | steps {self.step} -> {total}")
        bar = None
        if self.use_bar:
            from tqdm import tqdm
            bar = tqdm(total=total, initial=self.step, dynamic_ncols=True, desc="train")
        window = _Window()
        while self.step < total:
            epoch, start = self.data.position(self.step)
            for images, labels in self.data.epoch_loader(epoch, start):
                window.add(self._train_step(images, labels))
                self.step += 1
                if bar is not None:
                    bar.update(1)
                window = self._after_step(window, bar)
                if self.step >= total:
                    break
        if bar is not None:
            bar.close()
        if eng.is_main:                            # model/ appears complete or not at all
            tmp = make_temp_dir(self.run_dir / "model")
            try:
                self.ema.module.save(tmp, step=self.step)
                swap_dir(tmp, self.run_dir / "model")
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        eng.barrier()
        self._say(f"done: {self.run_dir / 'model'} (EMA weights)")
        return self.run_dir

    def _train_step(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """One optimizer update; returns the (detached) values to log."""
        dev = self.engine.device
        self.objective.set_progress(self.step, self.cfg.train.steps)
        images = images.to(dev, non_blocking=True)
        labels = labels.to(dev, non_blocking=True)
        loss, metrics = self.model(images, labels)             # through the DDP wrapper
        self.optimizer.zero_grad(set_to_none=True)
        self.engine.backward(loss)
        grad_norm = clip_gradients(self.params, self.cfg.optim.grad_clip)
        self.lr = self.optimizer.param_groups[0]["lr"]         # the LR this update uses (logged)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.bundle, self.step)
        return {"loss": loss.detach(), "grad_norm": grad_norm.detach(), **metrics}

    def _after_step(self, window: _Window, bar: Any) -> _Window:
        t, step = self.cfg.train, self.step
        last = step >= t.steps
        if window.count and (step % max(t.log_every, 1) == 0 or last):
            self._log(window, bar)
            window = _Window()
        t0 = time.perf_counter()
        if (t.sample_every > 0 and step % t.sample_every == 0) or last:
            self._sample_grid()
        if (t.ckpt_every > 0 and step % t.ckpt_every == 0) or last:
            self._checkpoint()
        window.paused += time.perf_counter() - t0
        return window

    # ---------------------------------------------------------------------------------------------
    # Logging, samples, checkpoints
    # ---------------------------------------------------------------------------------------------

    def _say(self, msg: str) -> None:
        if not self.engine.is_main:
            return
        if self.use_bar:
            from tqdm import tqdm
            tqdm.write(msg)
        else:
            print(msg, flush=True)

    def _log(self, window: _Window, bar: Any) -> None:
        """Average the window over steps and ranks (one all_reduce); one CSV row and one line on rank 0."""
        means = self.engine.reduce_mean({k: v / window.count for k, v in window.sums.items()})
        if not np.isfinite(means["loss"]):
            raise FloatingPointError(f"training loss is {means['loss']} at step {self.step}; the last good "
                                     f"checkpoint is in {self.run_dir / 'checkpoints'}")
        row = {"step": self.step, "loss": means.pop("loss"), "lr": self.lr,
               "grad_norm": means.pop("grad_norm"),
               "it/s": window.count / window.seconds(), **means}
        if not self.engine.is_main:
            return
        self.metrics.log(row)
        if bar is not None:
            bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
        else:
            extra = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in BASE_COLUMNS)
            print(f"step {self.step}/{self.cfg.train.steps} loss {row['loss']:.4f} lr {row['lr']:.2e} "
                  f"grad_norm {row['grad_norm']:.3f} it/s {row['it/s']:.1f} {extra}".rstrip(), flush=True)

    @torch.no_grad()
    def _sample_grid(self) -> None:
        """Rank 0: EMA samples, one row per class, fixed seed; the training RNG is left untouched."""
        from driftar_core.sampling import generate
        t = self.cfg.train
        if self.engine.is_main and t.grid_classes and t.grid_per_class > 0:
            rng = capture_rng()
            try:
                labels = torch.tensor(t.grid_classes, device=self.engine.device).repeat_interleave(t.grid_per_class)
                gen = torch.Generator(device="cpu").manual_seed(t.seed)
                images = generate(self.ema.module, labels, generator=gen).images      # [R K, C, H, W]
            finally:
                restore_rng(rng)
            save_grid(images, self.run_dir / "samples" / f"step-{self.step:07d}.png", rows=len(t.grid_classes))
        self.engine.barrier()

    def _checkpoint(self) -> None:
        """Every rank hands over its RNG state; rank 0 writes the checkpoint; everyone waits."""
        rngs = self.engine.all_gather_object(capture_rng())
        if self.engine.is_main:
            state = {"step": self.step, "world_size": self.engine.world_size, "seed": self.cfg.train.seed,
                     "batch_size": self.cfg.data.batch_size, "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "rng": rngs}
            save_checkpoint(self.run_dir / "checkpoints", self.step, ema_bundle=self.ema.module,
                            raw_weights=self.bundle.state_dict(), train_state=state)
            prune_checkpoints(self.run_dir / "checkpoints", self.cfg.train.keep_checkpoints)
        self.engine.barrier()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {}
