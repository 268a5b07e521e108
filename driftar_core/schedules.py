"""Torch-free step schedules, shared by the PyTorch samplers and the exported (numpy) loops."""
from __future__ import annotations

import math


def cosine_mask_lengths(seq_len: int, num_iter: int) -> list[int]:
    """Tokens still masked after each step k = 0..K-1 (MaskGIT/MAR): floor(L cos(pi/2 (k+1)/K)),
    clamped to [1, masked - 1] so each step predicts at least one token; 0 after the last step."""
    if not 1 <= num_iter <= seq_len:
        raise ValueError(f"num_iter must be in [1, {seq_len}] for {seq_len} tokens, got {num_iter}")
    lengths, masked = [], seq_len
    for k in range(num_iter):
        cosine = math.floor(seq_len * math.cos(math.pi / 2 * (k + 1) / num_iter))
        nxt = 0 if k == num_iter - 1 else max(1, min(masked - 1, cosine))
        lengths.append(nxt)
        masked = nxt
    return lengths
