"""The ``patch`` tokenizer: p x p pixel patches as continuous tokens, no weights.

MAR's pixel-space ablation groups pixels into patches in the same way (docs/backbones.md "MAR: architecture").
On the bundled 16x16 digits with p = 2 it gives L = 64 tokens of c = 4 channels, the scale at which
the drift-head probe was run (docs/method.md "The drift head probe").
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn


class PatchTokenizer(nn.Module):
    """images [B, C, H, W] in [-1, 1] <-> tokens [B, (H/p)(W/p), C p p], raster order.

    scale multiplies tokens after patchifying (MAR's "latent scale" slot; 1.0 for pixels).
    """

    def __init__(self, image_size: int = 16, channels: int = 1, patch_size: int = 2, scale: float = 1.0):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
        self.patch_size, self.scale = patch_size, scale
        self.grid = image_size // patch_size
        self.image_shape = (channels, image_size, image_size)
        self.token_shape = (self.grid * self.grid, channels * patch_size * patch_size)

    def encode(self, images: Tensor) -> Tensor:
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"patch tokenizer expects images of shape [B, {', '.join(map(str, self.image_shape))}], "
                             f"got {list(images.shape)}; resize the data (data.image_size) or change the model's image_size")
        p = self.patch_size
        tokens = rearrange(images, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=p, p2=p)  # [B, L, c]
        return tokens * self.scale

    def decode(self, tokens: Tensor) -> Tensor:
        p = self.patch_size
        return rearrange(tokens / self.scale, "b (h w) (c p1 p2) -> b c (h p1) (w p2)",
                         h=self.grid, p1=p, p2=p)                                     # [B, C, H, W]

    def positions_to_pixels(self) -> Tensor:
        """[L, 2] (row, col) of each token in the patch grid, raster order."""
        r = torch.arange(self.grid)
        return torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)
