"""A tiny word-level text tokenizer and NextStep-1's prompt prefix. Pure Python, no torch.

NextStep-1 conditions on a caption tokenised by Qwen2.5's tokenizer, followed by an image prefix
(pipeline_nextstep.py ``_add_prefix_ids``; docs/backbones.md "NextStep-1: architecture"):

    <bos> caption... <|image_area|> "h*w" <|begin_of_image|> [image tokens ...] <|end_of_image|>

with captions LEFT-padded to the longest in the batch and the negative (CFG) prompt empty. Here the
caption is a short English prompt naming a digit ("a handwritten digit three") and the tokenizer is
a fixed word list: special tokens, the prompt words, and the characters of the "h*w" size string.
"""
from __future__ import annotations

import re
from typing import Sequence

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
IMAGE_AREA, BOI, EOI, IMAGE_PLACEHOLDER = "<|image_area|>", "<|begin_of_image|>", "<|end_of_image|>", "<|image_placeholder|>"
SPECIALS = (PAD, BOS, EOS, IMAGE_AREA, BOI, EOI, IMAGE_PLACEHOLDER)
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WORDS = ("a", "handwritten", "digit", *DIGIT_NAMES)
SIZE_CHARS = (*"0123456789", "*")            # "8*8": NextStep writes the latent grid as text
VOCAB = (*SPECIALS, *WORDS, *SIZE_CHARS)
NEGATIVE_PROMPT = ""                          # NextStep's default negative prompt (the CFG branch)

_PIECES = re.compile(r"<\|[a-z_]+\|>|[0-9*]|[a-z]+|\S")


def class_prompt(label: int) -> str:
    """Class k of the digits -> its prompt, e.g. 3 -> "a handwritten digit three"."""
    if not 0 <= label < len(DIGIT_NAMES):
        raise ValueError(f"no prompt for class {label}: the digits have classes 0..{len(DIGIT_NAMES) - 1}")
    return f"a handwritten digit {DIGIT_NAMES[label]}"


class WordTokenizer:
    """Words, special tokens and size characters <-> ids (a fixed vocabulary; unknown words fail)."""

    def __init__(self, vocab: Sequence[str] = VOCAB):
        self.vocab = tuple(vocab)
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.pad_id, self.bos_id, self.eos_id = self.ids[PAD], self.ids[BOS], self.ids[EOS]
        self.boi_id, self.eoi_id = self.ids[BOI], self.ids[EOI]

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        pieces = _PIECES.findall(text.lower())
        unknown = [p for p in pieces if p not in self.ids]
        if unknown:
            raise ValueError(f"words {unknown} are not in the NextStep-1 tiny vocabulary; known words: "
                             f"{', '.join(WORDS)}")
        return [self.ids[p] for p in pieces]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.vocab[i] for i in ids if i != self.pad_id)

    def prefix(self, prompt: str, grid: int) -> list[int]:
        """<bos> prompt <|image_area|> "g*g" <|begin_of_image|> (the sequence before the image tokens)."""
        return [self.bos_id, *self.encode(prompt), self.ids[IMAGE_AREA], *self.encode(f"{grid}*{grid}"), self.boi_id]

    def batch_prefix(self, prompts: Sequence[str], grid: int) -> tuple[list[list[int]], list[list[bool]]]:
        """Left-padded prefixes of equal length P and their validity masks (False = padding)."""
        rows = [self.prefix(p, grid) for p in prompts]
        P = max(len(r) for r in rows)
        ids = [[self.pad_id] * (P - len(r)) + r for r in rows]
        valid = [[False] * (P - len(r)) + [True] * len(r) for r in rows]
        return ids, valid
