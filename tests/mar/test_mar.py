"""The MAR backbone: training masks, the sparse encoder, the step plan, CFG, entropy and keys."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from driftar_mar.build import build_mar
from driftar_mar.config import MARConfig
from driftar_mar.mar import cosine_mask_lengths
from driftar_mar.presets import PRESETS
from mar_small import SMALL

from driftar_core.interfaces import ARBackbone
from driftar_core.method.entropy import attention_entropy
from driftar_core.sampling import generate

L, C = 64, 4


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_is_an_ar_backbone(bundle):
    assert isinstance(bundle.backbone, ARBackbone)
    assert bundle.backbone.token_shape == (L, C) and bundle.backbone.z_dim == 32


# ---- training forward ---------------------------------------------------------------------------


def test_forward_train_shapes_and_mask(bundle, tokens):
    tok, y = tokens
    out = bundle.backbone.train().forward_train(tok, y, generator=gen())
    assert out.z.shape == (8, L, 32) and out.loss_mask.shape == (8, L) and out.entropy.shape == (8, L)
    counts = out.loss_mask.sum(1)
    assert (counts == counts[0]).all() and math.ceil(0.7 * L) <= counts[0] <= L
    again = bundle.backbone.forward_train(tok, y, generator=gen())
    assert torch.equal(out.loss_mask, again.loss_mask)                   # the generator drives orders and masks


def test_mask_ratio_is_truncated_normal_on_07_1(bundle):
    g = gen()
    n = torch.tensor([bundle.backbone.sample_num_masked(g) for _ in range(3000)], dtype=torch.float64)
    assert n.min() >= math.ceil(0.7 * L) and n.max() <= L
    # mean of N(1, 0.25) truncated to [0.7, 1]: 1 - 0.25 (phi(0) - phi(-1.2)) / (Phi(0) - Phi(-1.2)) = 0.867
    assert (n / L).mean() == pytest.approx(0.867 + 0.5 / L, abs=0.01)  # ceil adds about half a token


def test_loss_counts_only_masked_tokens(bundle, tokens):
    tok, y = tokens
    for p in bundle.head.parameters():                                   # a non-trivial head
        torch.nn.init.normal_(p, std=0.05)
    target = tok.clone().requires_grad_(True)
    out = bundle.backbone.forward_train(tok, y, generator=gen())
    loss = bundle.head.loss(target.reshape(-1, C), out.z.reshape(-1, 32), out.loss_mask.reshape(-1))
    loss.backward()
    visible = out.loss_mask == 0
    assert target.grad[visible].abs().sum() == 0 and target.grad[~visible].abs().sum() > 0


def test_sparse_encoder_ignores_masked_token_values(bundle, tokens):
    tok, y = tokens
    mar = bundle.backbone
    mask = torch.zeros(8, L, dtype=torch.bool)
    mask.scatter_(1, mar.sample_orders(8, gen())[:, :50], True)
    ce = mar.class_emb(y)
    z1, e1 = mar.forward_mae(tok, mask, ce)
    changed = torch.where(mask[..., None], torch.randn_like(tok) * 5, tok)
    z2, e2 = mar.forward_mae(changed, mask, ce)
    assert torch.equal(z1, z2) and torch.equal(e1, e2)
    visible_changed = torch.where(mask[..., None], tok, tok + 1.0)
    assert not torch.allclose(mar.forward_mae(visible_changed, mask, ce)[0], z1)
    ragged = mask.clone()
    ragged[0, ~mask[0]] = True
    with pytest.raises(ValueError, match="same number of masked"):
        mar.forward_mae(tok, ragged, ce)


def test_some_training_steps_lower_the_loss(bundle, tokens):
    tok, y = tokens
    bundle.train()
    opt = torch.optim.Adam(bundle.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        out = bundle.backbone.forward_train(tok, y)
        loss = bundle.head.loss(tok.reshape(-1, C), out.z.reshape(-1, 32), out.loss_mask.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.6 * sum(losses[:10])


# ---- generation ---------------------------------------------------------------------------------


# Tokens generated per step for L = 64, by hand from MAR's rule "still masked after step k = floor(L cos(pi/2
# (k+1)/K)), at least one token per step, all after the last": K = 4: 64 cos(pi/8) = 59.1, 64 cos(pi/4) = 45.3,
# 64 cos(3 pi/8) = 24.5 -> 59, 45, 24, 0 masked; K = 16: 63.7 62.8 61.2 59.1 56.4 53.2 49.5 45.3 40.6 35.6 30.2
# 24.5 18.6 12.5 6.3 -> floors; K = 64: one token per step (64 steps, 64 tokens, at least one each).
PER_STEP = {1: [64], 4: [5, 14, 21, 24], 16: [1, 1, 1, 2, 3, 3, 4, 4, 5, 5, 5, 6, 6, 6, 6, 6], 64: [1] * 64}


@pytest.mark.parametrize("num_iter", [1, 4, 16, 64])
def test_plan_partitions_tokens_on_the_cosine_schedule(bundle, num_iter):
    """Catches: a schedule other than MAR's cosine (linear, sin, round for floor, step k for k + 1, no clamp to
    one token per step), a position generated twice or never, and steps that do not follow the sample's
    order (MAR unmasks the END of the random order first: step k takes orders[:, n_{k+1}:n_k])."""
    state = bundle.backbone.new_state(torch.arange(5), num_iter=num_iter, generator=gen())
    steps = bundle.backbone.plan(state)
    sizes = [s.positions.shape[1] for s in steps]
    assert sizes == PER_STEP[num_iter] and sum(sizes) == L
    assert sizes == sorted(sizes)                                        # the cosine schedule speeds up
    every = torch.cat([s.positions for s in steps], dim=1)               # [B, L]
    assert torch.equal(every.sort(1).values, torch.arange(L).expand(5, L))  # each position exactly once
    assert torch.equal(torch.cat([s.positions for s in reversed(steps)], dim=1), state.orders)
    progress = [s.progress for s in steps]
    assert progress == pytest.approx([c / L for c in itertools.accumulate(PER_STEP[num_iter])])
    assert progress[-1] == 1.0


@pytest.mark.parametrize("seq_len, num_iter, masked", [
    (1, 1, [0]), (2, 2, [1, 0]), (4, 2, [2, 0]),                         # 4 cos(pi/4) = 2.83
    (10, 3, [8, 5, 0]),                                                  # 10 cos(pi/6) = 8.66, 10 cos(pi/3) = 5
    (4, 3, [3, 2, 0]), (3, 3, [2, 1, 0]),                                # 3 cos(pi/3) = 1.5
    (8, 8, [7, 6, 5, 4, 3, 2, 1, 0]),                                    # 8 cos(pi/8) = 7.4 -> clamped to 6
    (64, 4, [59, 45, 24, 0]),
])
def test_cosine_lengths_by_hand(seq_len, num_iter, masked):
    """Catches: floor replaced by round / ceil, the clamp to masked - 1 missing (8 steps of 8 tokens would
    generate nothing in step 2), or the step index off by one."""
    assert cosine_mask_lengths(seq_len, num_iter) == masked


def test_cosine_lengths_reject_more_steps_than_tokens():
    assert cosine_mask_lengths(64, 64)[-2:] == [1, 0]
    with pytest.raises(ValueError, match="num_iter"):
        cosine_mask_lengths(64, 65)


def test_orders_are_random_per_sample_and_seeded(bundle):
    a = bundle.backbone.new_state(torch.arange(4), 4, generator=gen(1)).orders
    assert torch.equal(a, bundle.backbone.new_state(torch.arange(4), 4, generator=gen(1)).orders)
    assert not torch.equal(a[0], a[1])


def test_step_commit_and_cfg_doubling(bundle):
    mar = bundle.backbone
    state = mar.new_state(torch.tensor([1, 2, 3]), num_iter=4, cfg=True, generator=gen())
    plain = mar.new_state(torch.tensor([1, 2, 3]), num_iter=4, cfg=False, generator=gen())
    steps = mar.plan(state)
    out = mar.step(state, steps[0].positions)
    n = steps[0].positions.shape[1]
    assert out.z.shape == (6, n, 32) and out.entropy.shape == (6, n)
    assert not torch.allclose(out.z[:3], out.z[3:])                       # second half: fake_latent
    ref = mar.step(plain, steps[0].positions)
    assert ref.z.shape == (3, n, 32) and torch.allclose(ref.z, out.z[:3], atol=1e-6)
    new = torch.randn(3, n, C)
    mar.commit(state, steps[0].positions, new)
    assert torch.equal(torch.gather(mar.tokens(state), 1, steps[0].positions[..., None].expand(-1, -1, C)), new)
    assert int((~state.mask).sum()) == 3 * n
    with pytest.raises(ValueError, match="class labels"):
        mar.new_state(torch.tensor([10]), 4)


def test_generate_is_deterministic_for_a_seed(bundle):
    labels = torch.tensor([0, 3, 7])
    a = generate(bundle, labels, cfg=2.0, generator=gen(5))
    b = generate(bundle, labels, cfg=2.0, generator=gen(5))
    c = generate(bundle, labels, cfg=2.0, generator=gen(6))
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)
    assert a.images.shape == (3, 1, 16, 16) and torch.isfinite(a.tokens).all()
    assert a.counts.backbone_passes == 4 and a.counts.head_nfe == 4 * 10


# ---- entropy ------------------------------------------------------------------------------------


def test_entropy_is_the_penultimate_decoder_block_over_all_keys(bundle, tokens):
    tok, y = tokens
    mar = bundle.backbone
    assert mar.entropy_block == 0                                        # decoder depth 2
    captured = {}
    blk = mar.decoder_blocks[mar.entropy_block]
    handle = blk.attn.register_forward_hook(lambda m, args, out: captured.update(x=args[0], attn=out[1]))
    out = mar.forward_train(tok, y, generator=gen())
    handle.remove()
    x, attn = captured["x"], captured["attn"]
    assert attn.shape == (8, 2, 2 + L, 2 + L)                            # buffer + L keys, all visible
    q, k, _ = blk.attn.qkv(x).reshape(8, 2 + L, 3, 2, 16).permute(2, 0, 3, 1, 4)
    ref = ((q @ k.transpose(-2, -1)) / 4.0).softmax(-1)
    assert torch.allclose(attn, ref, atol=1e-6)
    assert torch.allclose(out.entropy, attention_entropy(ref[:, :, 2:]), atol=1e-6)


def test_entropy_in_unit_interval_and_varies_across_positions(bundle, tokens):
    tok, y = tokens
    with torch.no_grad():                                                # sharpen attention: scale q and k
        bundle.backbone.decoder_blocks[0].attn.qkv.weight.mul_(4.0)
    e = bundle.backbone.forward_train(tok, y, generator=gen()).entropy
    assert e.shape == (8, L) and (e >= 0).all() and (e <= 1).all()
    assert e.std(dim=1).min() > 1e-3 and (e[0] - e[1]).abs().max() > 1e-3


# ---- checkpoint keys ----------------------------------------------------------------------------


def official_mar_keys(depth: int, head_depth: int) -> set[str]:
    """The key set of LTH14/mar's model_ema (docs/backbones.md "MAR: checkpoint keys")."""
    keys = {"class_emb.weight", "fake_latent", "z_proj.weight", "z_proj.bias", "z_proj_ln.weight", "z_proj_ln.bias",
            "encoder_pos_embed_learned", "encoder_norm.weight", "encoder_norm.bias", "decoder_embed.weight",
            "decoder_embed.bias", "mask_token", "decoder_pos_embed_learned", "decoder_norm.weight", "decoder_norm.bias",
            "diffusion_pos_embed_learned"}
    modules = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
    block = [f"{m}.{p}" for m in modules for p in ("weight", "bias")]
    for part in ("encoder_blocks", "decoder_blocks"):
        keys |= {f"{part}.{i}.{k}" for i in range(depth) for k in block}
    head = [f"{m}.{p}" for m in ("time_embed.mlp.0", "time_embed.mlp.2", "cond_embed", "input_proj",
                                 "final_layer.adaLN_modulation.1", "final_layer.linear") for p in ("weight", "bias")]
    res = [f"{m}.{p}" for m in ("in_ln", "mlp.0", "mlp.2", "adaLN_modulation.1") for p in ("weight", "bias")]
    head += [f"res_blocks.{j}.{k}" for j in range(head_depth) for k in res]
    return keys | {f"diffloss.net.{k}" for k in head}


def to_official(key: str) -> str:
    """driftar bundle key -> LTH14/mar key (the map a `driftar convert` uses, in reverse)."""
    if key.startswith("head."):
        return "diffloss." + key[len("head."):]
    assert key.startswith("backbone."), key
    return key[len("backbone."):]


def test_base_state_dict_equals_official_keys_and_shapes():
    with torch.device("meta"):
        bundle = build_mar(MARConfig(**PRESETS["base"]))
    sd = {to_official(k): tuple(v.shape) for k, v in bundle.state_dict().items()}
    assert set(sd) == official_mar_keys(12, 6)
    expected = {"class_emb.weight": (1000, 768), "fake_latent": (1, 768), "z_proj.weight": (768, 16),
                "encoder_pos_embed_learned": (1, 320, 768), "decoder_embed.weight": (768, 768),
                "mask_token": (1, 1, 768), "decoder_pos_embed_learned": (1, 320, 768),
                "diffusion_pos_embed_learned": (1, 256, 768), "encoder_blocks.0.attn.qkv.weight": (2304, 768),
                "decoder_blocks.11.mlp.fc1.weight": (3072, 768), "decoder_blocks.11.mlp.fc2.weight": (768, 3072),
                "diffloss.net.time_embed.mlp.0.weight": (1024, 256), "diffloss.net.cond_embed.weight": (1024, 768),
                "diffloss.net.input_proj.weight": (1024, 16),
                "diffloss.net.res_blocks.5.adaLN_modulation.1.weight": (3072, 1024),
                "diffloss.net.final_layer.adaLN_modulation.1.weight": (2048, 1024),
                "diffloss.net.final_layer.linear.weight": (32, 1024)}
    assert {k: sd[k] for k in expected} == expected


def test_init_follows_mar(bundle):
    mar = bundle.backbone
    for p in (mar.class_emb.weight, mar.fake_latent, mar.mask_token, mar.encoder_pos_embed_learned):
        assert 0.01 < float(p.detach().std()) < 0.03
    assert mar.encoder_blocks[0].attn.qkv.bias.abs().sum() == 0
    bound = math.sqrt(6 / (32 + 96))                                      # xavier_uniform of qkv [96, 32]
    assert mar.encoder_blocks[0].attn.qkv.weight.abs().max() <= bound


@pytest.mark.parametrize("decoder_depth", [1, 2, 3])
def test_step_computes_only_the_queried_rows_with_the_same_numbers(decoder_depth):
    """forward_kept(query=...) runs the last decoder block on the predicted rows only; z and E equal the
    full forward's at those rows (the sampling step uses nothing else)."""
    torch.manual_seed(0)
    mar = build_mar(MARConfig(**{**SMALL, "decoder_depth": decoder_depth})).backbone.eval()
    with torch.no_grad():
        for p in mar.parameters():
            p.add_(0.1 * torch.randn_like(p))
    tokens, mask = torch.randn(3, 64, 4), torch.zeros(3, 64, dtype=torch.bool)
    mask[:, ::2] = True                                                   # 32 masked per row
    query = torch.stack([torch.randperm(64)[:5] for _ in range(3)])
    ce = mar.class_emb(torch.tensor([1, 2, 3]))
    keep = mar.kept_indices(mask)
    with torch.no_grad():
        z_full, e_full = mar.forward_kept(tokens, keep, ce)
        z_q, e_q = mar.forward_kept(tokens, keep, ce, query=query)
    torch.testing.assert_close(z_q, torch.gather(z_full, 1, query[..., None].expand(-1, -1, z_full.shape[-1])))
    torch.testing.assert_close(e_q, e_full)
    assert z_q.shape == (3, 5, 32)
