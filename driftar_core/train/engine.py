"""A tiny distributed engine in Lightning Fabric's vocabulary, over plain ``torch.distributed``.

    engine = Engine.from_env("auto")            # torchrun env vars -> DDP; otherwise one process
    model, optimizer = engine.setup(objective, optimizer)   # DistributedDataParallel when world_size > 1
    loss, metrics = model(images, labels)       # forward ALWAYS through the wrapper, so grads sync
    engine.backward(loss)

Launch with ``torchrun --nproc_per_node N`` (it sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT); the backend is nccl on GPU and gloo on CPU (docs/layout.md "Training at scale"). The
official Drift-AR code called the unwrapped module, so its gradients were never all-reduced (D1 in
docs/method.md); here the only way to train is through :meth:`Engine.setup`'s wrapper.

Collectives (``barrier``, ``reduce_mean``, ``broadcast_object``, ``all_gather_object``) are no-ops
in a single process, so the trainer is written once for both cases. Every rank must call them in
the same order.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:LOCAL_RANK`` when a GPU is visible, else ``cpu``; ``"cuda"`` without one fails."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            from driftar_core.config import ConfigError
            raise ConfigError("train.device='cuda' but torch sees no CUDA GPU; use train.device=cpu or auto")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(device)


@dataclass
class Engine:
    """Rank bookkeeping, the DDP wrapper and the few collectives a training loop needs."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None          # "gloo" / "nccl" when distributed
    owns_process_group: bool = False    # True when this engine initialised it (and so destroys it)

    # ---------------------------------------------------------------------------------------------
    # Construction
    # ---------------------------------------------------------------------------------------------

    @classmethod
    def from_env(cls, device: str = "auto", env: Mapping[str, str] | None = None) -> "Engine":
        """Read torchrun's variables; WORLD_SIZE > 1 initialises a process group (env:// rendezvous).

        A process group the caller already initialised is reused and left alone on :meth:`close`.
        """
        env = os.environ if env is None else env
        world_size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
        if world_size <= 1 and not (dist.is_available() and dist.is_initialized()):
            return cls(device=resolve_device(device, 0))
        dev = resolve_device(device, local_rank)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        owns = False
        if not dist.is_initialized():
            missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in env]
            if missing:
                raise RuntimeError(f"WORLD_SIZE={world_size} but {', '.join(missing)} is not set; "
                                   "launch with torchrun (it sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)")
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
            owns = True
        else:
            backend = dist.get_backend()
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                   device=dev, backend=backend, owns_process_group=owns)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files or prints."""
        return self.rank == 0

    def close(self) -> None:
        """Destroy the process group if this engine created it."""
        if self.owns_process_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_process_group = False

    # ---------------------------------------------------------------------------------------------
    # Model and optimisation
    # ---------------------------------------------------------------------------------------------

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer, *,
              find_unused_parameters: bool = False) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Move ``model`` to the device and wrap it in DistributedDataParallel when distributed.

        DDP broadcasts rank 0's parameters and buffers at construction, so every rank starts equal.
        Call the RETURNED module for the forward pass; :meth:`unwrap` gives the plain module back.
        """
        model = model.to(self.device)
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                        find_unused_parameters=find_unused_parameters)
        return model, optimizer

    @staticmethod
    def unwrap(model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model

    def backward(self, loss: Tensor) -> None:
        """``loss.backward()``; DDP's hooks average the gradients across ranks during it."""
        loss.backward()

    # ---------------------------------------------------------------------------------------------
    # Collectives (no-ops in one process)
    # ---------------------------------------------------------------------------------------------

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def reduce_mean(self, values: Mapping[str, Tensor | float]) -> dict[str, float]:
        """Mean of each scalar metric over ranks, in ONE all_reduce. Every rank must pass the same keys."""
        keys = list(values)
        if not keys:
            return {}
        flat = torch.stack([torch.as_tensor(values[k], dtype=torch.float64).detach().reshape(()).cpu()
                            for k in keys])                                   # [K]
        if self.distributed:
            flat = flat.to(self.device)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat = flat / self.world_size
        return dict(zip(keys, flat.cpu().tolist()))

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """``obj`` from rank ``src`` on every rank (picklable objects only)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src, device=self._object_device())
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def _object_device(self) -> torch.device | None:
        return self.device if self.backend == "nccl" else None
