"""A tiny FAKE model bundle (MLP "backbone" + linear head behind the real seams) and run configs.

The fake satisfies driftar_core.interfaces exactly as a backbone plugin does, trains in milliseconds
on CPU, and draws a random mask per step from the global torch RNG (as MAR does), so resume tests
exercise RNG checkpointing. ``fake_plugin`` registers it through the real plugin manager for one test
(llm/datasette style); ``build_fake`` is importable by the DDP and kill worker scripts. The conftest of
``tests/train`` and ``tests/reliability`` re-export the fixtures.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from pydantic import Field
from torch import Tensor, nn

from driftar_core.bundle import ModelBundle
from driftar_core.config import RunConfig, SamplingConfig, Strict
from driftar_core.hookspecs import hookimpl
from driftar_core.interfaces import Step, StepOutput, TrainOutput
from driftar_core.tokenizers.patch import PatchTokenizer


class FakeConfig(Strict):
    image_size: int = 16
    patch_size: int = 4          # L = 16 tokens of c = 16 channels
    width: int = 32
    num_classes: int = 10
    mask_min: float = 0.5        # fraction of tokens masked per step, uniform in [mask_min, 1]
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(num_iter=4, cfg=1.0))

    @property
    def class_num(self) -> int:
        """Classes the model draws (every model config declares ``class_num``; docs/plugins.md)."""
        return self.num_classes


@dataclass
class FakeState:
    labels: Tensor               # [B'] (B' = 2B with CFG)
    tokens: Tensor               # [B', L, c]
    known: Tensor                # [B', L] bool
    order: Tensor                # [B, L]
    num_iter: int
    batch: int


class FakeBackbone(nn.Module):
    """Masked MLP: known tokens + position + class -> z for every position (a MAR in miniature)."""

    def __init__(self, cfg: FakeConfig, token_shape: tuple[int, int]):
        super().__init__()
        self.token_shape = token_shape
        L, c = token_shape
        self.z_dim = cfg.width
        self.mask_min = cfg.mask_min
        self.tok = nn.Linear(c, cfg.width)
        self.pos = nn.Parameter(torch.randn(L, cfg.width) * 0.02)
        self.cls = nn.Embedding(cfg.num_classes + 1, cfg.width)     # last row: the null class (CFG)
        self.mix = nn.Sequential(nn.LayerNorm(cfg.width), nn.Linear(cfg.width, cfg.width), nn.GELU(),
                                 nn.Linear(cfg.width, cfg.width))
        self.null = cfg.num_classes

    def _z(self, tokens: Tensor, known: Tensor, labels: Tensor) -> Tensor:
        h = self.tok(tokens * known[..., None]) + self.pos + self.cls(labels)[:, None]   # [B, L, D]
        return self.mix(h + h.mean(1, keepdim=True))                                       # [B, L, D]

    def forward_train(self, tokens: Tensor, cond: Tensor, generator: Any = None) -> TrainOutput:
        B, L, _ = tokens.shape
        ratio = self.mask_min + (1 - self.mask_min) * torch.rand(()).item()      # global RNG
        order = torch.argsort(torch.rand(B, L, device=tokens.device), dim=1)
        masked = torch.zeros(B, L, dtype=torch.bool, device=tokens.device)
        masked.scatter_(1, order[:, : max(1, int(ratio * L))], True)
        z = self._z(tokens, ~masked, cond)
        return TrainOutput(z=z, loss_mask=masked.float())

    def new_state(self, cond: Tensor, num_iter: int, cfg: bool = False, generator: Any = None) -> FakeState:
        B = len(cond)
        L, c = self.token_shape
        labels = torch.cat([cond, torch.full_like(cond, self.null)]) if cfg else cond
        order = torch.argsort(torch.rand(B, L, generator=generator), dim=1).to(cond.device)
        return FakeState(labels, torch.zeros(len(labels), L, c, device=cond.device),
                         torch.zeros(len(labels), L, dtype=torch.bool, device=cond.device), order, num_iter, B)

    def plan(self, state: FakeState) -> list[Step]:
        L = self.token_shape[0]
        cuts = torch.linspace(0, L, state.num_iter + 1).round().long().tolist()
        return [Step(state.order[:, a:b], b / L) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]

    def step(self, state: FakeState, positions: Tensor) -> StepOutput:
        z = self._z(state.tokens, state.known, state.labels)                          # [B', L, D]
        pos = positions.repeat(len(state.labels) // state.batch, 1)                    # [B', n]
        return StepOutput(z=torch.gather(z, 1, pos[..., None].expand(-1, -1, z.shape[-1])))

    def commit(self, state: FakeState, positions: Tensor, tokens: Tensor) -> None:
        reps = len(state.labels) // state.batch
        pos, tok = positions.repeat(reps, 1), tokens.repeat(reps, 1, 1)
        state.tokens.scatter_(1, pos[..., None].expand(-1, -1, tok.shape[-1]), tok)
        state.known.scatter_(1, pos, True)

    def tokens(self, state: FakeState) -> Tensor:
        return state.tokens[: state.batch]


class FakeHead(nn.Module):
    """Linear regression head: loss = masked MSE; sample = prediction + small noise (1 NFE)."""

    nfe = 1

    def __init__(self, z_dim: int, token_dim: int):
        super().__init__()
        self.noise_shape = (1, token_dim)
        self.proj = nn.Linear(z_dim, token_dim)

    def loss(self, target: Tensor, z: Tensor, mask: Tensor | None = None, entropy: Tensor | None = None) -> Tensor:
        err = (self.proj(z) - target).pow(2).mean(-1)                                  # [N]
        if mask is None:
            return err.mean()
        return (err * mask).sum() / mask.sum().clamp_min(1)

    def sample(self, z: Tensor, noise: Tensor, cfg: float = 1.0, temperature: float = 1.0,
               entropy: Tensor | None = None) -> Tensor:
        pred = self.proj(z)
        if cfg != 1.0:
            cond, uncond = pred.chunk(2)
            pred = uncond + cfg * (cond - uncond)
        return pred + 0.05 * temperature * noise[:, 0]


def build_fake(config: FakeConfig) -> ModelBundle:
    tok = PatchTokenizer(image_size=config.image_size, channels=1, patch_size=config.patch_size)
    backbone = FakeBackbone(config, tok.token_shape)
    head = FakeHead(config.width, tok.token_shape[1])
    return ModelBundle(tok, backbone, head, config, backbone_name="fake", arch="fake_tiny")


def fake_run_config(runs_dir: Any, **train: Any) -> RunConfig:
    """A run that takes a second or two on CPU."""
    t = dict(steps=8, seed=3, device="cpu", log_every=2, sample_every=4, ckpt_every=4, runs_dir=str(runs_dir),
             name="t", grid_classes=[0, 1, 2], grid_per_class=3, threads=1)
    t.update(train)
    return RunConfig.model_validate({
        "backbone": "fake", "model": {"arch": "fake_tiny"},
        "data": {"batch_size": 16}, "optim": {"lr": 3e-3, "warmup_steps": 4, "ema_decay": 0.9},
        "train": t})


class FakeImages(torch.utils.data.Dataset):
    """256 class-dependent noisy 16x16 images: a dataset that needs no sklearn import (DDP workers)."""

    num_classes = 10
    image_shape = (1, 16, 16)

    def __init__(self, split: str = "train", image_size: int = 16, root: Any = None):
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        self.labels = torch.arange(256) % self.num_classes
        protos = torch.rand(self.num_classes, 1, 16, 16, generator=torch.Generator().manual_seed(7)) * 2 - 1
        self.images = (protos[self.labels] + 0.1 * torch.randn(256, 1, 16, 16, generator=g)).clamp(-1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self.labels[i])


class FakePlugin:
    """Registers the fake backbone (architecture ``fake_tiny``) and dataset ``fake_images``."""

    @hookimpl
    def driftar_register_datasets(self, register: Any) -> None:
        register("fake_images", FakeImages)

    @hookimpl
    def driftar_register_backbones(self, register: Any) -> None:
        from driftar_core.registry import BackboneSpec
        register(BackboneSpec(name="fake", config_cls=FakeConfig, build=build_fake, presets={"tiny": {}}))


PLUGIN_NAME = "train-tests-fake"


def register_fake_plugin() -> None:
    from driftar_core.plugins import get_plugin_manager
    pm = get_plugin_manager()
    pm.register(FakePlugin(), name=PLUGIN_NAME)
    pm.reset_registries()


@pytest.fixture
def fake_plugin():
    """The fake backbone and dataset in the registry for one test (plugin registered, then unregistered)."""
    from driftar_core.plugins import get_plugin_manager
    register_fake_plugin()
    try:
        yield
    finally:
        pm = get_plugin_manager()
        pm.unregister(name=PLUGIN_NAME)
        pm.reset_registries()


@pytest.fixture
def fake_factory():
    """``fake_factory(**config_overrides) -> ModelBundle``."""
    return lambda **overrides: build_fake(FakeConfig(**overrides))


@pytest.fixture
def fake_bundle() -> ModelBundle:
    torch.manual_seed(0)
    return build_fake(FakeConfig())


@pytest.fixture
def make_config(tmp_path):
    """``make_config(runs_dir=None, **train_overrides) -> RunConfig`` (runs under tmp_path by default)."""
    def make(runs_dir: Any = None, **train: Any) -> RunConfig:
        return fake_run_config(tmp_path if runs_dir is None else runs_dir, **train)
    return make
