"""Training data: the dataset by registry name, and a data order that is a pure function of the step.

The batch seen at optimizer step s (0-based) is fixed by (seed, epoch, rank) alone:

    epoch, k = divmod(s, steps_per_epoch)
    order    = DistributedSampler permutation seeded by seed + epoch (torch's own rule), this rank's share
    batch    = order[k * batch_size : (k + 1) * batch_size]

so a resume at any step, mid-epoch included, replays exactly the batches an uninterrupted run would
have seen: nothing about the data order needs saving. ``drop_last`` keeps every batch full and every
rank on the same number of steps. The loader gets its own generator, so building it never draws
from the global torch RNG (which the model's per-step randomness uses and the checkpoint restores).
"""
from __future__ import annotations

import itertools
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler


def build_dataset(name: str, *, split: str = "train", image_size: int = 16, root: str | None = None) -> Dataset:
    """The dataset registered as ``name`` (``digits``, ``imagefolder``, or a plugin's).

    Falls back to the built-in classes while the plugin registry is not available.
    """
    try:
        from driftar_core.plugins import registries
        factory = registries().datasets.get(name)
    except (ImportError, AttributeError):
        factory = _builtin_datasets().get(name)
        if factory is None:
            raise ValueError(f"unknown dataset {name!r} (data.dataset); without the plugin registry only "
                             f"{', '.join(sorted(_builtin_datasets()))} are available") from None
    return factory(split=split, image_size=image_size, root=root)


def _builtin_datasets() -> dict[str, Any]:
    from driftar_core.data.digits import DigitsDataset
    from driftar_core.data.imagefolder import ImageFolderDataset
    return {"digits": DigitsDataset, "imagefolder": ImageFolderDataset}


class _Skip(Sampler[int]):
    """The indices of ``base`` after the first ``skip`` (resume mid-epoch without loading skipped data)."""

    def __init__(self, base: Sampler[int], skip: int):
        self.base, self.skip = base, skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)  # type: ignore[arg-type]


class StepData:
    """Batches indexed by step for one rank: ``epoch_loader(epoch, start)`` yields batches start, start+1, ..."""

    def __init__(self, dataset: Dataset, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, pin_memory: bool = False):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.num_workers, self.pin_memory = rank, num_workers, pin_memory
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                          seed=seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"data.batch_size={batch_size} is larger than the {len(self.sampler)} images each "
                             f"of the {world_size} process(es) sees per epoch; lower data.batch_size")

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of the 0-based optimizer step ``step``."""
        return divmod(step, self.steps_per_epoch)

    def epoch_loader(self, epoch: int, start: int = 0) -> DataLoader:
        """A loader over batches ``start .. steps_per_epoch - 1`` of ``epoch``."""
        self.sampler.set_epoch(epoch)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 1_009 + self.rank)
        return DataLoader(self.dataset, batch_size=self.batch_size,
                          sampler=_Skip(self.sampler, start * self.batch_size), drop_last=True,
                          num_workers=self.num_workers, pin_memory=self.pin_memory, generator=gen)
