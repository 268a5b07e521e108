"""driftar_core.nn.fused: several Linears as one matmul, its weight cache, and the layers built on it."""
from __future__ import annotations

import copy

import torch
from torch import nn

from driftar_core.nn.fused import fused_linear


def linears(bias=(True, False, True)) -> nn.Module:
    torch.manual_seed(0)
    owner = nn.Module()
    owner.a, owner.b, owner.c = (nn.Linear(8, n, bias=bb) for n, bb in zip((5, 3, 6), bias))
    return owner


def separate(owner: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([owner.a(x), owner.b(x), owner.c(x)], -1)


def fused(owner: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return fused_linear(owner, "abc", (owner.a, owner.b, owner.c), x)


def test_fused_equals_separate_layers_with_and_without_biases():
    x = torch.randn(2, 3, 8)
    for bias in ((True, False, True), (False, False, False)):
        owner = linears(bias)
        with torch.no_grad():
            torch.testing.assert_close(fused(owner, x), separate(owner, x), atol=1e-6, rtol=1e-6)


def test_gradients_reach_the_original_parameters():
    owner, ref = linears(), linears()
    x = torch.randn(4, 8)
    fused(owner, x).square().sum().backward()
    separate(ref, x).square().sum().backward()
    for name in ("a", "b", "c"):
        torch.testing.assert_close(getattr(owner, name).weight.grad, getattr(ref, name).weight.grad)


def test_cache_follows_in_place_updates_loading_dtype_and_replaced_modules():
    owner, x = linears(), torch.randn(2, 8)
    with torch.no_grad():
        first = fused(owner, x)
        owner.b.weight.mul_(2.0)                                   # an EMA / optimizer style in-place update
        torch.testing.assert_close(fused(owner, x), separate(owner, x))
        assert not torch.allclose(fused(owner, x), first)
        other = linears()
        with torch.no_grad():
            for p in other.parameters():
                p.add_(1.0)
        owner.load_state_dict(other.state_dict())
        torch.testing.assert_close(fused(owner, x), separate(other, x))
        owner.c = nn.Linear(8, 6)                                  # a replaced module
        torch.testing.assert_close(fused(owner, x), separate(owner, x))
        owner.double()                                             # .to(): new storage, same Parameter objects
        torch.testing.assert_close(fused(owner, x.double()), separate(owner, x.double()))
    with torch.inference_mode():
        torch.testing.assert_close(fused(owner, x.double()), separate(owner, x.double()))


def test_a_deep_copy_does_not_share_the_cache():
    owner, x = linears(), torch.randn(2, 8)
    with torch.no_grad():
        fused(owner, x)
        clone = copy.deepcopy(owner)
        clone.a.weight.zero_()
        torch.testing.assert_close(fused(clone, x), separate(clone, x))
        torch.testing.assert_close(fused(owner, x), separate(owner, x))


def test_large_layers_run_unfused_and_cache_nothing(monkeypatch):
    import driftar_core.nn.fused as fused_mod
    monkeypatch.setattr(fused_mod, "MAX_FUSED_NUMEL", 10)
    owner, x = linears(), torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused(owner, x), separate(owner, x))
    assert not owner.__dict__.get("_fused_linear_cache")
