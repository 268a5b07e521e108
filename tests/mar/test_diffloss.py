"""DiffLoss: official key names and init, the TokenHead seam, masking, CFG and the sampling pitfall."""
from __future__ import annotations

import torch
from driftar_mar.config import DiffLossConfig
from driftar_mar.diffloss import DiffLoss

from driftar_core.interfaces import TokenHead


def make(depth=2, width=32, steps=10, **kw) -> DiffLoss:
    return DiffLoss(DiffLossConfig(depth=depth, width=width, num_sampling_steps=steps, **kw), z_dim=16, token_dim=4)


def test_key_names_and_shapes_mirror_official_diffloss_net():
    head = make(depth=2, width=32)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes["net.time_embed.mlp.0.weight"] == (32, 256)
    assert shapes["net.time_embed.mlp.2.weight"] == (32, 32)
    assert shapes["net.cond_embed.weight"] == (32, 16)
    assert shapes["net.input_proj.weight"] == (32, 4)
    for j in range(2):
        for k in ("in_ln.weight", "in_ln.bias", "mlp.0.weight", "mlp.2.weight"):
            assert f"net.res_blocks.{j}.{k}" in shapes
        assert shapes[f"net.res_blocks.{j}.adaLN_modulation.1.weight"] == (96, 32)
    assert shapes["net.final_layer.adaLN_modulation.1.weight"] == (64, 32)
    assert shapes["net.final_layer.linear.weight"] == (8, 32)          # eps + variance: 2c
    assert not any("norm_final" in k for k in shapes)                   # non-affine, as official
    assert len(list(head.buffers())) == 0                               # schedules are not state


def test_zero_init_of_adaln_and_output():
    net = make().net
    for block in net.res_blocks:
        assert block.adaLN_modulation[1].weight.abs().sum() == 0
    assert net.final_layer.linear.weight.abs().sum() == 0 and net.final_layer.adaLN_modulation[1].bias.abs().sum() == 0
    assert 0.01 < net.time_embed.mlp[0].weight.std() < 0.03


def test_is_a_token_head():
    head = make(steps=7)
    assert isinstance(head, TokenHead) and head.nfe == 7 and head.noise_shape == (8, 4)


def test_loss_counts_only_masked_rows():
    head = make()
    target = torch.randn(20, 4, requires_grad=True)
    z = torch.randn(20, 16)
    # make the head non-trivial so every row would get a gradient
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    mask = (torch.arange(20) % 3 == 0).float()
    head.loss(target, z, mask).backward()
    visible = mask == 0
    assert target.grad[visible].abs().sum() == 0 and target.grad[~visible].abs().sum() > 0


def test_loss_repeats_rows_diffusion_batch_mul_times():
    head = make()
    seen = []
    forward = head.net.forward
    head.net.forward = lambda x, t, c: (seen.append(x.shape[0]), forward(x, t, c))[1]
    head.loss(torch.randn(5, 4), torch.randn(5, 16), torch.tensor([1.0, 0, 1, 1, 0]))
    assert seen == [3 * 4]


def test_sample_shapes_cfg_and_noise_sharing():
    head = make()
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.05)
    z = torch.randn(6, 16)
    noise = torch.randn(6, *head.noise_shape)
    a = head.sample(z, noise)
    assert a.shape == (6, 4) and torch.equal(a, head.sample(z, noise.clone()))       # same noise, same tokens
    assert not torch.equal(a, head.sample(z, torch.randn_like(noise)))
    # CFG: rows [cond; uncond]; scale 1 reduces to the cond half; both halves share the noise
    zz = torch.cat([z, torch.randn(6, 16)])
    assert torch.allclose(head.sample(zz, noise, cfg=1.0), a, atol=1e-5)
    guided = head.sample(zz, noise, cfg=3.0)
    assert guided.shape == (6, 4) and not torch.allclose(guided, a)
    # uncond == cond: guidance has nothing to amplify
    assert torch.allclose(head.sample(torch.cat([z, z]), noise, cfg=3.0), a, atol=1e-5)


def test_fresh_head_samples_finite_and_clipped_head_bounded():
    """A fresh head predicts eps = 0, v = 0. Unclipped (MAR's latents), the chain returns about
    x_T / sqrt(abar_999) ~ 2e4 x_T: finite, not small. With x0 clipped to the data range (the tiny
    default) the last step returns the clipped x0, so samples stay in range."""
    noise = torch.randn(64, 101, 4)
    z = torch.randn(64, 16)
    raw = make(steps=100, clip_x0=None).sample(z, noise)
    assert torch.isfinite(raw).all() and raw.abs().max() > 100
    clipped = make(steps=100).sample(z, noise)
    assert clipped.abs().max() <= 1.0 + 1e-5


def _toy_batch(n, w):
    z = torch.randn(n, 16)
    mode = torch.randint(0, 2, (n, 1)).float() * 2 - 1
    return z, (0.5 * torch.tanh(z @ w) + 0.4 * mode).clamp(-1, 1)


def test_briefly_trained_head_samples_bounded_values():
    """docs/method.md "The drift head probe", the pitfall: the first respaced step (t = 999) multiplies eps errors by
    ~316. With the tiny default (learned variance AND x0 clipped to the data range) a briefly trained
    head samples values near the data; its loss goes down."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 4, generator=g) / 4
    head = make(depth=2, width=64, steps=100)
    opt = torch.optim.Adam(head.parameters(), lr=2e-3)
    losses = []
    for _ in range(150):
        z, x = _toy_batch(128, w)
        loss = head.loss(x, z)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) < 0.5 * sum(losses[:20])
    z, x = _toy_batch(256, w)
    out = head.sample(z, torch.randn(256, *head.noise_shape))
    assert torch.isfinite(out).all() and out.abs().max() < 3.0
    assert (out - x).abs().mean() < 1.0      # near the data, not just bounded
