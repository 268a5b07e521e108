"""The draft model: Eq. 3 regression + draft-target entropy alignment (method/draft.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from driftar_core.config import ConfigError, validate
from driftar_core.method.draft import DraftConfig, DraftModel

D = 16


def make(seed: int = 0, **kw) -> DraftModel:
    torch.manual_seed(seed)
    return DraftModel(DraftConfig(**{"dim": D, "depth": 2, "num_heads": 2, **kw}))


def rotating_sequences(B: int, L: int, seed: int) -> torch.Tensor:
    """z_{t+1} = Q z_t for a fixed random orthogonal Q: a toy target whose next feature is predictable."""
    gen = torch.Generator().manual_seed(123)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=gen))
    z = [torch.randn(B, D, generator=torch.Generator().manual_seed(seed))]
    for _ in range(L - 1):
        z.append(z[-1] @ Q.T)
    return torch.stack(z, 1)                                                # [B, L, D]


def test_shapes_causality_and_attention():
    draft = make()
    z = torch.randn(3, 7, D)
    out = draft(z, return_attn=True)
    assert out.pred.shape == (3, 7, D) and out.attn.shape == (3, 2, 7, 7)
    torch.testing.assert_close(out.attn.sum(-1), torch.ones(3, 2, 7))
    assert out.attn.triu(1).abs().max() == 0                                 # causal
    torch.testing.assert_close(draft(z).pred, out.pred, atol=1e-5, rtol=1e-5)  # SDPA path == explicit path
    nn.init.normal_(draft.head.weight)                                      # make the output depend on h
    z2 = z.clone()
    z2[:, 4:] += 1.0                                                        # change the future
    torch.testing.assert_close(draft(z2).pred[:, :4], draft(z).pred[:, :4])
    e = draft.entropy(out.attn).detach()
    assert e.shape == (3, 7) and float(e[:, 0].abs().max()) == 0.0 and bool(((e >= 0) & (e <= 1)).all())


def test_untrained_draft_predicts_the_current_feature():
    z = torch.randn(2, 5, D)
    torch.testing.assert_close(make()(z).pred, z)


def test_regression_loss_decreases_on_a_toy_sequence():
    draft = make()
    opt = torch.optim.Adam(draft.parameters(), lr=3e-3)
    z_eval = rotating_sequences(16, 12, seed=99)
    before = float(draft.loss(z_eval).detach())
    for step in range(120):
        loss = draft.loss(rotating_sequences(32, 12, seed=step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = float(draft.loss(z_eval).detach())
    assert after < 0.3 * before, (before, after)


def test_entropy_alignment_pulls_draft_entropy_to_the_target_and_trains_only_the_draft():
    draft = make(entropy_weight=1.0)
    z = torch.randn(8, 10, D, requires_grad=True)
    e_target = torch.full((8, 10), 0.3, requires_grad=True)
    opt = torch.optim.Adam(draft.parameters(), lr=1e-2)
    first = draft.loss_terms(z, e_target)
    assert set(first) == {"loss", "reg", "ent", "draft_entropy_mean"}
    first["loss"].backward()
    assert z.grad is None and e_target.grad is None                         # stop-gradient on the target
    for _ in range(60):
        opt.zero_grad()
        draft.loss(z, e_target).backward()
        opt.step()
    before, after = float(first["ent"].detach()), float(draft.loss_terms(z, e_target)["ent"].detach())
    assert after < 0.5 * before, (before, after)


def test_init_from_blocks_copies_a_target_with_the_same_names():
    target = make(seed=1, depth=3)                                          # 3 "target" blocks
    draft = make(seed=2)
    draft.init_from_blocks(target.blocks, target.norm)
    for i in range(2):
        for (k, a), b in zip(draft.blocks[i].state_dict().items(), target.blocks[i].state_dict().values()):
            assert torch.equal(a, b), k
    assert torch.equal(draft.norm.weight, target.norm.weight)


class ForeignBlock(nn.Module):
    """Another class with timm's parameter names and some parameter-free extras (as timm's Block)."""

    def __init__(self, dim: int, extra: bool = False):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.Module()
        self.attn.qkv, self.attn.proj, self.attn.q_norm = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), nn.Identity()
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.ls1 = nn.Identity()
        if extra:
            self.gamma = nn.Parameter(torch.ones(dim))                      # e.g. LayerScale


def test_init_from_blocks_accepts_other_classes_and_rejects_mismatches():
    draft = make()
    draft.init_from_blocks([ForeignBlock(D) for _ in range(4)])
    with pytest.raises(ValueError, match="unexpected keys.*gamma"):
        draft.init_from_blocks([ForeignBlock(D, extra=True) for _ in range(2)])
    with pytest.raises(ValueError, match="shape mismatches"):
        draft.init_from_blocks([ForeignBlock(2 * D) for _ in range(2)])
    with pytest.raises(ValueError, match="only 1"):
        draft.init_from_blocks([ForeignBlock(D)])


def test_init_from_timm_blocks():
    timm = pytest.importorskip("timm")
    blocks = [timm.models.vision_transformer.Block(D, 2, qkv_bias=True) for _ in range(2)]
    draft = make()
    draft.init_from_blocks(blocks, nn.LayerNorm(D))
    x = torch.randn(2, 1, D)                    # one position: causal == timm's bidirectional attention
    torch.testing.assert_close(draft.blocks[0](x)[0], blocks[0](x), atol=1e-5, rtol=1e-5)


def test_token_input_and_config():
    draft = make(token_dim=3)
    z, tokens = torch.randn(2, 6, D), torch.randn(2, 6, 3)
    torch.testing.assert_close(draft(z, tokens).pred, draft(z).pred)        # zero-init token embedding
    assert torch.isfinite(draft.loss(z, tokens=tokens))
    with pytest.raises(ValueError, match="token_dim"):
        make()(z, tokens)
    with pytest.raises(ConfigError, match="depht"):
        validate(DraftConfig, {"depht": 2})
    with pytest.raises(ValueError, match="divisible"):
        DraftModel(DraftConfig(dim=10, num_heads=4))
