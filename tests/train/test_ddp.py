"""Two gloo ranks on CPU, launched the way torchrun launches them (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT), with the port chosen ONCE in the parent (pytorch PR #194377's lesson)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from driftar_core.bundle import load_safetensors

WORKER = Path(__file__).resolve().parent / "ddp_worker.py"
TIMEOUT_S = 150


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 30)
def test_two_rank_gloo_training_keeps_ranks_in_sync(tmp_path):
    port, world = free_port(), 2
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(tmp_path), str(tmp_path / "runs")],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{out}"

    init = [load_safetensors(tmp_path / f"init{r}.safetensors") for r in range(world)]
    final = [load_safetensors(tmp_path / f"final{r}.safetensors") for r in range(world)]
    assert any(not torch.equal(init[0][k], init[1][k]) for k in init[0])      # ranks started apart
    for k in final[0]:                                                         # DDP broadcast + all-reduce
        assert torch.equal(final[0][k], final[1][k]), f"{k} differs across ranks"
    assert any(not torch.equal(final[0][k], init[0][k]) for k in final[0])    # and training moved them

    run = Path((tmp_path / "run0.txt").read_text())
    assert Path((tmp_path / "run1.txt").read_text()) == run                   # one run dir, from rank 0
    raw = load_safetensors(run / "checkpoints" / "step-0000002" / "raw.safetensors")
    assert all(torch.equal(raw[k], final[0][k]) for k in raw)                 # rank 0's checkpoint
    assert '"world_size": 2' in (run / "env.json").read_text()
    assert (run / "metrics.csv").read_text().count("\n") == 3                 # header + steps 1, 2
    assert "step 2/2" in outputs[0] and "step 2/2" not in outputs[1]           # only rank 0 prints
