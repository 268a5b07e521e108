"""NextStep-1 backbone: layers, masking, the KV cache against full recomputation, verify/rollback, use_norm."""
from __future__ import annotations

import pytest
import torch

from driftar_core.sampling import generate
from driftar_nextstep1.layers import Attention, RotaryEmbedding, apply_rope
from driftar_nextstep1.text import class_prompt

LABELS = [3, 8]


def teacher_forced_steps(backbone, tokens, cond, cfg):
    """Cached decoding over known tokens: z [B', L, D], E [B', L] from one step() per position."""
    state = backbone.new_state(cond, cfg=cfg)
    zs, es = [], []
    for j in range(tokens.shape[1]):
        pos = torch.full((tokens.shape[0], 1), j)
        out = backbone.step(state, pos)
        zs.append(out.z)
        es.append(out.entropy)
        backbone.commit(state, pos, tokens[:, j:j + 1])
        assert state.cache_len == state.n == j + 1
    return torch.cat(zs, 1), torch.cat(es, 1)


# ---- layers -----------------------------------------------------------------------------------------


def test_rope_scores_depend_only_on_relative_position():
    rope = RotaryEmbedding(16, theta=10000.0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(pq: int, pk: int) -> torch.Tensor:
        cq, sq = rope(torch.tensor([pq]), torch.float32)
        ck, sk = rope(torch.tensor([pk]), torch.float32)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum()

    torch.testing.assert_close(score(5, 2), score(40, 37))
    assert not torch.allclose(score(5, 2), score(5, 4))


@torch.no_grad()
def test_gqa_attention_shapes_and_explicit_softmax_matches_sdpa():
    attn = Attention(hidden=32, heads=4, kv_heads=2, qkv_bias=True, o_bias=False)
    assert attn.k_proj.weight.shape == (16, 32) and attn.o_proj.bias is None and attn.q_proj.bias is not None
    x = torch.randn(2, 5, 32)
    cos, sin = RotaryEmbedding(8, 10000.0)(torch.arange(5), torch.float32)
    mask = torch.ones(5, 5, dtype=torch.bool).tril()[None, None].expand(2, 1, 5, 5)
    out, weights, (k, v) = attn(x, cos, sin, mask, need_weights=True)
    ref, none, _ = attn(x, cos, sin, mask)
    assert out.shape == (2, 5, 32) and k.shape == v.shape == (2, 2, 5, 8) and none is None
    assert weights.shape == (2, 4, 5, 5) and torch.allclose(weights.sum(-1), torch.ones(2, 4, 5))
    assert float(weights.triu(1).abs().max()) == 0.0                            # causal
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_attention_and_mlp_equal_the_textbook_formulas():
    """Fused q/k/v and gate/up, q and k rotated together, GQA by grouping queries = Llama's layer written out."""
    import torch.nn.functional as F

    from driftar_nextstep1.layers import MLP, RMSNorm
    torch.manual_seed(0)
    attn = Attention(hidden=32, heads=4, kv_heads=2, qkv_bias=True, o_bias=False)
    x, past_k, past_v = torch.randn(2, 3, 32), torch.randn(2, 2, 4, 8), torch.randn(2, 2, 4, 8)
    cos, sin = RotaryEmbedding(8, 10000.0)(torch.arange(4, 7), torch.float32)
    mask = torch.ones(2, 1, 3, 7, dtype=torch.bool).tril(4)
    mask[1, :, :, :2] = False                                                    # left padding in sample 1
    q = apply_rope(attn.q_proj(x).view(2, 3, 4, 8).transpose(1, 2), cos, sin)
    k = torch.cat([past_k, apply_rope(attn.k_proj(x).view(2, 3, 2, 8).transpose(1, 2), cos, sin)], 2)
    v = torch.cat([past_v, attn.v_proj(x).view(2, 3, 2, 8).transpose(1, 2)], 2)
    logits = q @ k.repeat_interleave(2, 1).transpose(-2, -1) / 8 ** 0.5
    weights = logits.masked_fill(~mask, float("-inf")).softmax(-1)              # [2, 4, 3, 7]
    ref = attn.o_proj((weights @ v.repeat_interleave(2, 1)).transpose(1, 2).reshape(2, 3, 32))
    for need_weights in (True, False):
        out, w, (k_out, v_out) = attn(x, cos, sin, mask, (past_k, past_v), need_weights=need_weights)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(k_out, k) and torch.testing.assert_close(v_out, v)
        if need_weights:
            torch.testing.assert_close(w, weights, atol=1e-6, rtol=1e-5)
    mlp, norm = MLP(32, 40), RMSNorm(32, 1e-5)
    with torch.no_grad():
        norm.weight.normal_()
    torch.testing.assert_close(mlp(x), mlp.down_proj(F.silu(mlp.gate_proj(x)) * mlp.up_proj(x)))
    torch.testing.assert_close(norm(x), norm.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))


def test_rotary_span_equals_per_position_tables():
    rope = RotaryEmbedding(16, theta=10000.0)
    for start, n in ((0, 5), (37, 1), (250, 20)):                               # the last one grows the table
        for got, want in zip(rope.span(start, n, torch.float32), rope(torch.arange(start, start + n), torch.float32)):
            torch.testing.assert_close(got, want)


# ---- the backbone --------------------------------------------------------------------------------------


@torch.no_grad()
def test_forward_train_shapes_and_aux_loss(make_bundle):
    b = make_bundle()
    L, c = b.backbone.token_shape
    assert (L, c) == (16, 4) and b.backbone.z_dim == 32
    out = b.backbone.forward_train(torch.randn(2, L, c), torch.tensor(LABELS))
    assert out.z.shape == (2, L, 32) and out.entropy.shape == (2, L) and out.loss_mask.shape == (2, L)
    assert out.aux_loss.ndim == 0 and float(out.aux_loss) > 0
    assert float(out.entropy[:, 0].abs().max()) == 0.0                          # z_1 sees only <boi>
    assert 0 < float(out.entropy[:, 1:].min()) and float(out.entropy.max()) <= 1


@torch.no_grad()
def test_future_tokens_do_not_change_earlier_conditions(make_bundle):
    b = make_bundle()
    tokens = torch.randn(2, 16, 4)
    changed = tokens.clone()
    changed[:, 7:] = torch.randn(2, 9, 4)                                       # x_8 .. x_16 (positions 7..)
    z1 = b.backbone.forward_train(tokens, LABELS).z
    z2 = b.backbone.forward_train(changed, LABELS).z
    torch.testing.assert_close(z1[:, :8], z2[:, :8])                            # z_j sees x_1 .. x_{j-1}
    assert (z1[:, 8:] - z2[:, 8:]).abs().amax(-1).min() > 1e-4


@torch.no_grad()
def test_kv_cached_decoding_equals_full_recomputation(make_bundle):
    b = make_bundle()
    tokens = torch.randn(2, 16, 4)
    z, e = teacher_forced_steps(b.backbone, tokens, LABELS, cfg=True)          # [cond; uncond] rows
    prompts = [class_prompt(l) for l in LABELS] + ["", ""]
    ref = b.backbone.forward_train(torch.cat([tokens, tokens]), prompts)       # uncached, same padding
    torch.testing.assert_close(z, ref.z, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(e, ref.entropy, atol=1e-5, rtol=1e-4)
    unpadded = b.backbone.forward_train(tokens, ["", ""])                       # RoPE is relative: padding is inert
    torch.testing.assert_close(z[2:], unpadded.z, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_verify_equals_sequential_steps_and_rollback_restores_the_cache(make_bundle):
    bb = make_bundle().backbone
    tokens = torch.randn(2, 16, 4)
    z_seq, e_seq = teacher_forced_steps(bb, tokens, LABELS, cfg=False)
    state = bb.new_state(LABELS)
    for j in range(3):
        pos = torch.full((2, 1), j)
        bb.step(state, pos)
        bb.commit(state, pos, tokens[:, j:j + 1])
    out = bb.verify(state, tokens[:, 3:7])                                     # 4 drafts -> positions 3..7
    assert out.z.shape == (2, 5, 32) and state.n == 7 and state.cache_len == 8
    torch.testing.assert_close(out.z, z_seq[:, 3:8], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.entropy, e_seq[:, 3:8], atol=1e-5, rtol=1e-4)
    bb.rollback(state, 2)                                                       # keep 2 drafts
    assert state.n == 5 and state.cache_len == 6 and float(state.tokens[:, 5:].abs().max()) == 0
    bb.commit(state, torch.full((2, 1), 5), tokens[:, 5:6])
    assert state.cache_len == state.n == 6
    torch.testing.assert_close(bb.step(state, torch.full((2, 1), 6)).z[:, 0], z_seq[:, 6], atol=1e-5, rtol=1e-4)


def test_raster_order_is_enforced(make_bundle):
    bb = make_bundle().backbone
    state = bb.new_state(LABELS)
    with pytest.raises(ValueError, match="raster order"):
        bb.step(state, torch.full((2, 1), 3))
    with pytest.raises(ValueError, match="num_iter"):
        bb.new_state(LABELS, num_iter=4)
    with pytest.raises(ValueError, match="class labels"):
        bb.new_state([12])
    with pytest.raises(ValueError, match="vocabulary"):
        bb.new_state(["a handwritten cat"])


def test_generate_with_cfg_and_prompts(make_bundle):
    b = make_bundle()
    out = generate(b, torch.tensor(LABELS), generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 1, 8, 8) and torch.isfinite(out.tokens).all()
    assert out.counts.backbone_passes == 16 and out.counts.head_nfe == 16 * 3
    by_text = generate(b, [class_prompt(l) for l in LABELS], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(by_text.tokens, out.tokens)                     # labels are prompts


def test_use_norm_normalises_training_tokens_and_sampled_tokens(make_bundle):
    b = make_bundle(use_norm=True)
    tokens = b.tokenizer.encode(torch.rand(3, 1, 8, 8) * 2 - 1)                # channel-normalised
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(3, 16), atol=1e-5, rtol=0)
    out = generate(b, torch.tensor(LABELS), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.tokens.mean(-1), torch.zeros(2, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.tokens.var(-1, unbiased=False), torch.ones(2, 16), atol=1e-3, rtol=0)
