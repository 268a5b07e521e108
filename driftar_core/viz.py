"""Image grids: images [N, C, H, W] in [-1, 1] -> a PNG (nearest upscaling so 16x16 digits are visible)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def to_uint8(images: Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W] (grey) or [N, H, W, C] in 0..255."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    x = x[:, 0] if x.shape[1] == 1 else x.permute(0, 2, 3, 1)
    return x.numpy()


def make_grid(images: Tensor, nrow: int, pad: int = 1, scale: int = 4) -> np.ndarray:
    """Tile [N, C, H, W] into rows of ``nrow`` images, upscaled ``scale`` x (nearest), uint8 array."""
    arr = to_uint8(images)
    if arr.ndim == 3:
        arr = arr[..., None]
    n, h, w, c = arr.shape
    ncol = nrow
    nrows = (n + ncol - 1) // ncol
    grid = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = arr[i]
    grid = grid.repeat(scale, 0).repeat(scale, 1)
    return grid[..., 0] if c == 1 else grid


def save_grid(images: Tensor, path: str | Path, nrow: int, scale: int = 4) -> Path:
    """Write a PNG grid atomically."""
    import io

    from PIL import Image

    from driftar_core.bundle import atomic_write_bytes
    buf = io.BytesIO()
    Image.fromarray(make_grid(images, nrow, scale=scale)).save(buf, format="PNG")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path
