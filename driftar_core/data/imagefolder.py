"""Users' own images: ``root/<class_name>/*.png|jpg`` as (image in [-1, 1], label) pairs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from driftar_core.config import ConfigError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


class ImageFolderDataset(Dataset):
    """Class folders sorted by name give labels 0..K-1. Images are center-cropped and resized."""

    def __init__(self, root: str | None = None, split: str = "train", image_size: int = 16, channels: int = 1):
        if root is None:
            raise ConfigError("the imagefolder dataset needs data.root=PATH (a folder of class sub-folders)")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"data.root {self.root} is not a directory")
        classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not classes:
            raise ConfigError(f"data.root {self.root} has no class sub-folders (expected root/<class>/<image>.png)")
        self.classes = classes
        self.num_classes = len(classes)
        self.samples = [(f, i) for i, c in enumerate(classes) for f in sorted((self.root / c).iterdir())
                        if f.suffix.lower() in EXTENSIONS]
        if not self.samples:
            raise ConfigError(f"no images with extensions {sorted(EXTENSIONS)} under {self.root}")
        self.image_size, self.channels = image_size, channels
        self.image_shape = (channels, image_size, image_size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image
        path, label = self.samples[i]
        img = Image.open(path).convert("L" if self.channels == 1 else "RGB")
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        img = img.resize((self.image_size, self.image_size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
        x = x[None] if self.channels == 1 else x.permute(2, 0, 1)
        return x.contiguous(), label
