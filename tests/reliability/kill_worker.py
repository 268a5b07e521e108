"""A training run that SIGKILLs itself in the middle of writing one checkpoint (fault injection).

    python kill_worker.py RUNS_DIR STEPS KILL_STEP CKPT_EVERY

The run trains the fake model (tests/fake_model.py) and dies while ``save_checkpoint`` of
KILL_STEP is writing its raw weights: the step's temporary directory is half written, ``latest``
still names the previous checkpoint, and the run directory's lock dies with the process.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
_spec = importlib.util.spec_from_file_location("fake_model", Path(__file__).resolve().parents[1] / "fake_model.py")
fake = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fake
_spec.loader.exec_module(fake)


def main(runs_dir: str, steps: int, kill_step: int, ckpt_every: int) -> None:
    import driftar_core.train.checkpoint as checkpoint
    from driftar_core.train import train
    fake.register_fake_plugin()
    real_save = checkpoint.save_safetensors

    def save_then_die(tensors, path, *args, **kwargs):
        real_save(tensors, path, *args, **kwargs)
        if Path(path).name == checkpoint.RAW_WEIGHTS and f"step-{kill_step:07d}" in Path(path).parent.name:
            os.kill(os.getpid(), signal.SIGKILL)          # mid-checkpoint: raw written, state not yet

    checkpoint.save_safetensors = save_then_die
    cfg = fake.fake_run_config(runs_dir, steps=steps, log_every=3, sample_every=5, ckpt_every=ckpt_every)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"dataset": "fake_images"})})
    torch.manual_seed(0)
    train(cfg, bundle=fake.build_fake(fake.FakeConfig()), progress=False)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
