"""One rank of the 2-process DDP test; run with torchrun's environment variables set by the parent.

    python ddp_worker.py OUT_DIR RUNS_DIR

Each rank builds the fake bundle from a DIFFERENT seed (DDP must broadcast rank 0's weights), trains
two steps on an in-memory dataset through ``driftar_core.train.train`` and saves its initial and final weights to OUT_DIR.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("fake_model", HERE.parent / "fake_model.py")
fake = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fake          # dataclasses look their module up while the class is built
_spec.loader.exec_module(fake)


def main(out: Path, runs_dir: str) -> None:
    from driftar_core.bundle import save_safetensors
    from driftar_core.train import train
    fake.register_fake_plugin()                     # the in-memory dataset: no sklearn import per rank
    rank = int(os.environ["RANK"])
    torch.manual_seed(100 + rank)
    bundle = fake.build_fake(fake.FakeConfig())
    save_safetensors(bundle.state_dict(), out / f"init{rank}.safetensors")
    cfg = fake.fake_run_config(runs_dir, steps=2, log_every=1, sample_every=0, ckpt_every=2)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"dataset": "fake_images"})})
    run_dir = train(cfg, bundle=bundle, progress=False)
    save_safetensors(bundle.state_dict(), out / f"final{rank}.safetensors")
    (out / f"run{rank}.txt").write_text(str(run_dir))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
