"""Image grids and uint8 export: images [N, C, H, W] in [-1, 1] -> PNG grid / uint8 arrays.

One grid implementation serves the trainer's sample grids and ``driftar sample --out grid.png``.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

GRID_MIN_PIXELS = 64        # upscale grids (nearest) until one image is at least this tall


def to_uint8(images: Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W] (grey) or [N, H, W, C] in 0..255."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    x = x[:, 0] if x.shape[1] == 1 else x.permute(0, 2, 3, 1)
    return x.numpy()


def grid_image(images: Tensor, rows: int, cols: int | None = None, min_pixels: int = GRID_MIN_PIXELS) -> "Any":
    """images [N, C, H, W] in [-1, 1] -> a PIL image of ``rows`` x ``cols`` (default N / rows, rounded up),
    row-major, 1-px grey gaps, nearest upscale; empty slots at the end stay black."""
    from PIL import Image
    n, c, h, w = images.shape
    cols = cols or math.ceil(n / rows)
    x = images.detach().float().cpu().clamp(-1, 1)[:, :3 if c >= 3 else 1]                # [N, C', H, W]
    if rows * cols > n:
        x = torch.cat([x, x.new_full((rows * cols - n, *x.shape[1:]), -1.0)])             # black slots
    x = torch.nn.functional.pad(x, (0, 1, 0, 1), value=0.0)                               # grey gap
    x = x.view(rows, cols, x.shape[1], h + 1, w + 1).permute(0, 3, 1, 4, 2)              # [R, H', K, W', C']
    x = x.reshape(rows * (h + 1), cols * (w + 1), -1)[:-1, :-1]                            # [R H', K W', C']
    arr = ((x + 1) * 127.5).round().to(torch.uint8).numpy()
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    scale = max(1, math.ceil(min_pixels / h))
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def save_grid(images: Tensor, path: str | Path, rows: int, cols: int | None = None) -> Path:
    """Write a grid PNG atomically."""
    from driftar_core.bundle import atomic_write_bytes
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    grid_image(images, rows, cols).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path
