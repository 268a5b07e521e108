"""scikit-learn's bundled handwritten digits as a tiny image-generation dataset (no download).

1,797 real 8x8 grey images of 10 classes, upsampled bilinearly to ``image_size`` (16 by default),
scaled to [-1, 1], split once into train/test with a fixed seed, stratified by class.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

SPLIT_SEED = 0          # fixed forever: the test split is what FD is measured against
TEST_FRACTION = 0.2     # ~360 held-out images, ~36 per class


@lru_cache(maxsize=4)
def _load(image_size: int) -> tuple[Tensor, Tensor, Tensor]:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0          # [N, 1, 8, 8] in [0, 1]
    if image_size != 8:
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear",
                                            align_corners=False)              # [N, 1, S, S]
    x = (x.clamp(0, 1) * 2 - 1).contiguous()                                  # [-1, 1]
    y = torch.tensor(d.target, dtype=torch.long)
    rng = np.random.default_rng(SPLIT_SEED)
    is_test = np.zeros(len(y), dtype=bool)
    for c in range(10):                                                       # stratified split
        idx = np.flatnonzero(d.target == c)
        is_test[rng.choice(idx, size=int(round(TEST_FRACTION * len(idx))), replace=False)] = True
    return x, y, torch.from_numpy(is_test)


class DigitsDataset(Dataset):
    """(image [1, S, S] in [-1, 1], label) pairs of the fixed ``train`` or ``test`` split."""

    num_classes = 10

    def __init__(self, split: str = "train", image_size: int = 16, root: str | None = None):
        if split not in ("train", "test", "all"):
            raise ValueError(f"digits split must be 'train', 'test' or 'all', got {split!r}")
        x, y, is_test = _load(image_size)
        keep = torch.ones_like(is_test) if split == "all" else (is_test if split == "test" else ~is_test)
        self.images, self.labels = x[keep], y[keep]
        self.image_shape = (1, image_size, image_size)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self.labels[i])
