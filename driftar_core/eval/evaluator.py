"""The digits evaluator: a small CNN classifier whose penultimate activations are the feature space
of driftar's Frechet distance, precision and recall (the role Inception-v3 plays for FID).

It is trained once by :func:`train_evaluator` on the train split of the bundled digits and shipped in
the zoo as ``digits_evaluator.digits`` (safetensors + card with its measured test accuracy). It is
ONLY used to measure samples, never as a training signal (docs/layout.md "Data and evaluation").

    images [B, 1, 16, 16] in [-1, 1]
      -> conv3x3(32) relu conv3x3(32) relu maxpool   [B, 32, 8, 8]
      -> conv3x3(64) relu conv3x3(64) relu maxpool   [B, 64, 4, 4]
      -> linear(1024 -> F) relu = features           [B, F]      (F = 64)
      -> dropout, linear(F -> 10) = logits           [B, 10]

F = 64 rather than Inception's 2048 because the real reference set (the digits test split) has only
~360 images: the covariance of a Gaussian fit in F dimensions needs many more than F samples.

Re-make the shipped weights (about a minute on 2 CPU cores):

    python -m driftar_core.eval.evaluator --out zoo/driftar_zoo/models/digits_evaluator.digits
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

ARCH = "digits_evaluator"
TAG = "digits"
NAME = f"{ARCH}.{TAG}"
FORMAT_VERSION = 1


# -------------------------------------------------------------------------------------------------
# Configs (the one place defaults live)
# -------------------------------------------------------------------------------------------------


class EvaluatorConfig(BaseModel):
    """Architecture of the classifier; saved as ``config.json`` next to its weights."""

    model_config = ConfigDict(extra="forbid")

    image_size: int = 16        # the digits are 8x8 upsampled to 16x16 (driftar_core.data.digits)
    channels: int = 1
    num_classes: int = 10
    width: int = 32             # channels of the first stage; the second stage has 2x
    feature_dim: int = 64       # F: small enough for a Gaussian fit on ~360 real test images
    dropout: float = 0.3        # on the features, before the classifier layer (training only)


class EvaluatorRecipe(BaseModel):
    """How the shipped evaluator is trained (``python -m driftar_core.eval.evaluator``)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    epochs: int = 40            # ~1,440 train images / 64 = 23 steps per epoch -> ~900 steps
    batch_size: int = 64
    lr: float = 2e-3            # AdamW, cosine decay to 0 after a short linear warm-up
    warmup_steps: int = 50
    weight_decay: float = 0.05
    max_shift: int = 2          # random translation in pixels of the 16x16 image (= 1 original pixel)
    threads: int | None = 1     # torch threads during training: fixed for reproducibility; this CNN
                                # gains nothing from more (2 threads on a busy 2-core box: 5x slower)


# -------------------------------------------------------------------------------------------------
# Network
# -------------------------------------------------------------------------------------------------


class DigitsClassifier(nn.Module):
    """CNN classifier; ``features(x)`` is the embedding the metrics use, ``forward(x)`` the logits."""

    def __init__(self, config: EvaluatorConfig | None = None):
        super().__init__()
        self.config = config = config or EvaluatorConfig()
        w, s = config.width, config.image_size // 4
        self.image_shape = (config.channels, config.image_size, config.image_size)

        def stage(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))

        self.stages = nn.Sequential(stage(config.channels, w), stage(w, 2 * w))
        self.embed = nn.Linear(2 * w * s * s, config.feature_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.feature_dim, config.num_classes)

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def check_images(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"the digits evaluator expects images [B, {', '.join(map(str, self.image_shape))}] "
                             f"in [-1, 1], got {list(x.shape)}; evaluate at the evaluator's image size")

    def features(self, x: Tensor) -> Tensor:
        """images [B, 1, 16, 16] in [-1, 1] -> penultimate embedding [B, F] (post-ReLU)."""
        self.check_images(x)
        h = self.stages(x)                                   # [B, 2w, 4, 4]
        return F.relu(self.embed(h.flatten(1)))              # [B, F]

    def forward(self, x: Tensor) -> Tensor:
        """images [B, 1, 16, 16] -> logits [B, num_classes]."""
        return self.classifier(self.dropout(self.features(x)))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


@torch.no_grad()
def embed(model: DigitsClassifier, images: Tensor, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """Features [N, F] and logits [N, C] of ``images`` [N, 1, 16, 16], in eval mode, on CPU (float32).

    The batch size does not change the result beyond float rounding; eval mode makes it
    deterministic (no dropout, no batch statistics).
    """
    model.check_images(images)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    feats, logits = [], []
    for i in range(0, len(images), batch_size):
        f = model.features(images[i:i + batch_size].to(device, torch.float32))
        feats.append(f.cpu())
        logits.append(model.classifier(f).cpu())
    model.train(was_training)
    return torch.cat(feats), torch.cat(logits)


# -------------------------------------------------------------------------------------------------
# Training recipe
# -------------------------------------------------------------------------------------------------


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image [B, C, H, W] by up to ``max_shift`` pixels; uncovered pixels = background (-1)."""
    if max_shift <= 0:
        return x
    B, _, H, W = x.shape
    m = max_shift
    padded = F.pad(x, (m, m, m, m), value=-1.0)                               # [B, C, H+2m, W+2m]
    dy, dx = torch.randint(0, 2 * m + 1, (2, B), generator=generator)
    rows = (dy[:, None] + torch.arange(H))[:, None, :, None].expand(-1, x.shape[1], -1, W + 2 * m)
    out = torch.gather(padded, 2, rows)                                       # [B, C, H, W+2m]
    cols = (dx[:, None] + torch.arange(W))[:, None, None, :].expand(-1, x.shape[1], H, -1)
    return torch.gather(out, 3, cols)                                         # [B, C, H, W]


def accuracy(model: DigitsClassifier, images: Tensor, labels: Tensor) -> tuple[float, int]:
    """(accuracy, number correct) of argmax predictions, in eval mode."""
    _, logits = embed(model, images)
    correct = int((logits.argmax(1) == labels).sum())
    return correct / len(labels), correct


def train_evaluator(out_dir: str | Path | None = None, recipe: EvaluatorRecipe | None = None,
                    config: EvaluatorConfig | None = None, command: str | None = None,
                    log: Any = print) -> tuple[DigitsClassifier, dict[str, Any]]:
    """Train the digits evaluator on ``DigitsDataset('train')``; measure it on ``DigitsDataset('test')``.

    With ``out_dir``, writes a zoo entry there: ``model.safetensors``, ``config.json``, ``card.json``
    (a :class:`driftar_core.zoo.ModelCard` of kind ``evaluator``) and ``README.md``.
    Returns the model (eval mode) and its metrics.
    """
    recipe = recipe or EvaluatorRecipe()
    config = config or EvaluatorConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads or threads)
    try:
        return _train(out_dir, recipe, config, command, log)
    finally:
        torch.set_num_threads(threads)


def _train(out_dir: str | Path | None, recipe: EvaluatorRecipe, config: EvaluatorConfig,
           command: str | None, log: Any) -> tuple[DigitsClassifier, dict[str, Any]]:
    from driftar_core.data.digits import DigitsDataset

    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    train = DigitsDataset("train", image_size=config.image_size)
    test = DigitsDataset("test", image_size=config.image_size)
    model = DigitsClassifier(config)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(train) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch

    def lr_at(step: int) -> float:  # linear warm-up, then cosine to zero
        if step < recipe.warmup_steps:
            return recipe.lr * (step + 1) / recipe.warmup_steps
        t = (step - recipe.warmup_steps) / max(1, total - recipe.warmup_steps)
        return recipe.lr * 0.5 * (1 + math.cos(math.pi * t))

    t0, step = time.perf_counter(), 0
    model.train()
    for epoch in range(recipe.epochs):
        order = torch.randperm(len(train), generator=gen)
        total_loss = 0.0
        for i in range(0, len(train), recipe.batch_size):
            idx = order[i:i + recipe.batch_size]
            x = random_shift(train.images[idx], recipe.max_shift, gen)       # [b, 1, 16, 16]
            loss = F.cross_entropy(model(x), train.labels[idx])
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += float(loss.detach()) * len(idx)
            step += 1
        if log and ((epoch + 1) % 10 == 0 or epoch + 1 == recipe.epochs):
            acc, _ = accuracy(model, test.images, test.labels)
            log(f"epoch {epoch + 1}/{recipe.epochs}  loss {total_loss / len(train):.4f}  "
                        f"test acc {acc:.4f}  ({time.perf_counter() - t0:.1f}s)")
    model.eval()
    test_acc, test_correct = accuracy(model, test.images, test.labels)
    train_acc, _ = accuracy(model, train.images, train.labels)
    metrics: dict[str, Any] = {
        "test_accuracy": test_acc, "test_correct": test_correct, "test_total": len(test),
        "train_accuracy": train_acc, "train_seconds": round(time.perf_counter() - t0, 1), "steps": step,
    }
    metrics.update(reference_fds(model))
    if out_dir is not None:
        write_zoo_entry(model, Path(out_dir), recipe, metrics, command or recipe_command(recipe, out_dir))
    return model, metrics


def reference_fds(model: DigitsClassifier, seeds: Sequence[int] = (0, 1, 2)) -> dict[str, float]:
    """Real-vs-real FDs in this feature space, recorded in the card as sanity numbers."""
    from driftar_core.data.digits import DigitsDataset
    from driftar_core.eval.metrics import fd_halves, frechet_distance, repeat_over_seeds

    test = DigitsDataset("test", image_size=model.config.image_size)
    train = DigitsDataset("train", image_size=model.config.image_size)
    f_test, _ = embed(model, test.images)
    f_train, _ = embed(model, train.images)

    def one(seed: int) -> dict[str, float]:
        g = torch.Generator().manual_seed(seed)
        sub = torch.randperm(len(f_train), generator=g)[:len(f_test)]
        return {"fd_floor_test_halves": fd_halves(f_test, test.labels, seed=seed),
                "fd_train_vs_test": frechet_distance(f_train[sub], f_test)}

    spread = repeat_over_seeds(one, seeds)
    return {k: round(v, 4) for k, v in spread.items() if k != "per_seed"}


# -------------------------------------------------------------------------------------------------
# Zoo entry
# -------------------------------------------------------------------------------------------------


def recipe_command(recipe: EvaluatorRecipe, out_dir: str | Path) -> str:
    """The CLI command equivalent to ``train_evaluator(out_dir, recipe)``."""
    args = ["python", "-m", "driftar_core.eval.evaluator", "--out", str(out_dir)]
    for key, value in recipe.model_dump(exclude_defaults=True).items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return shlex.join(args)


def write_zoo_entry(model: DigitsClassifier, out_dir: Path, recipe: EvaluatorRecipe,
                    metrics: dict[str, Any], command: str) -> Path:
    """Write weights, config.json, card.json and README.md (weights first: the card pins their sha256)."""
    from driftar_core.bundle import atomic_write_text, save_safetensors
    from driftar_core.zoo import make_card

    out_dir.mkdir(parents=True, exist_ok=True)
    save_safetensors(model.state_dict(), out_dir / "model.safetensors")
    cfg = {"format": FORMAT_VERSION, "kind": "evaluator", "arch": ARCH,
           "config": model.config.model_dump(mode="json"), "recipe": recipe.model_dump(mode="json")}
    atomic_write_text(out_dir / "config.json", json.dumps(cfg, indent=2) + "\n")
    card = make_card(
        out_dir, NAME, kind="evaluator", num_params=model.num_params(), metrics=metrics, command=command,
        dataset="digits (scikit-learn, 16x16, train split of driftar_core.data.digits)",
        notes=("Digits classifier used ONLY to measure samples (FD / precision / recall in its "
               f"{model.feature_dim}-d penultimate features, class accuracy); never a training signal."))
    atomic_write_text(out_dir / "README.md", evaluator_readme(card, model.feature_dim, recipe))
    for name in ("model.safetensors", "config.json", "card.json", "README.md"):
        (out_dir / name).chmod(0o644)  # atomic writes create 0600 temp files; package data must be readable
    return out_dir


def evaluator_readme(card: Any, feature_dim: int, recipe: EvaluatorRecipe) -> str:
    m = card.metrics
    return f"""---
library_name: driftar
license: {card.license.lower()}
tags: [driftar, evaluator, digits]
datasets: [sklearn-digits]
---

# {card.name}

A small CNN digits classifier ({card.num_params:,} parameters) whose {feature_dim}-d penultimate
features define driftar's Frechet distance (FD), precision and recall; its argmax gives the
class-conditional accuracy of generated samples. It is used only to evaluate, never to train a generator.

| metric | value |
|---|---|
| test accuracy (digits test split) | {m['test_accuracy']:.4f} ({m['test_correct']}/{m['test_total']}) |
| train accuracy | {m['train_accuracy']:.4f} |
| FD floor: test half vs test half (mean +- std over 3 splits) | {m['fd_floor_test_halves']:.3f} +- {m['fd_floor_test_halves_std']:.3f} |
| FD: {m['test_total']} train images vs the test split (3 draws) | {m['fd_train_vs_test']:.3f} +- {m['fd_train_vs_test_std']:.3f} |

FD is biased upwards by small sample sizes: the floor compares two halves (~180 images each), so it sits
above the train-vs-test FD at {m['test_total']} vs {m['test_total']} images. Compare a generator's FD with
these numbers only at the same sample sizes (`driftar_core.eval.evaluate` reports both).

Made by (training took {m['train_seconds']}s, {m['steps']} steps, {recipe.threads or 'default'} CPU thread(s)):

```
{card.command}
```

Load with `driftar_core.pretrained.load_evaluator()`; `sha256` in `card.json` pins the weights file.
"""


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m driftar_core.eval.evaluator --out DIR [--seed N] [--epochs N] ...``"""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m driftar_core.eval.evaluator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="zoo entry directory to write")
    for name, field in EvaluatorRecipe.model_fields.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                            help=f"default: {field.default}")
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    recipe = EvaluatorRecipe.model_validate({k: v for k, v in args.items() if v is not None})
    command = shlex.join(["python", "-m", "driftar_core.eval.evaluator", *argv])
    _, metrics = train_evaluator(out, recipe, command=command)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
