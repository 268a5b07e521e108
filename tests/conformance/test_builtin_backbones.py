"""The conformance kit (driftar_core.testing) over every tiny preset of the built-in backbones, as a
third-party plugin runs it over its own (timm's test_models over list_models is the model)."""
from __future__ import annotations

import pytest
import torch

from driftar_core.factory import create_model, list_models
from driftar_core.testing import BackboneConformance

TINY = list_models(["mar_tiny*", "nextstep1_tiny*"])


def test_every_builtin_backbone_has_tiny_presets_under_test():
    assert {"mar_tiny", "mar_tiny_drift", "nextstep1_tiny", "nextstep1_tiny_drift"} <= set(TINY)


class TestBuiltinBackbones(BackboneConformance):
    @pytest.fixture(params=TINY)
    def bundle(self, request):
        torch.manual_seed(0)
        return create_model(request.param)


def test_the_kit_catches_a_broken_rollback_and_a_broken_plan():
    """Negative controls: the checks fail on a backbone that breaks its contract."""
    from driftar_core.testing import check_plan_and_steps, check_verify_and_rollback
    from driftar_core.interfaces import StepOutput
    bundle = create_model("nextstep1_tiny_drift").eval()
    verify = bundle.backbone.verify

    def off_by_one(state, tokens):                                   # z of the wrong positions
        out = verify(state, tokens)
        return StepOutput(z=out.z.roll(1, dims=1), entropy=out.entropy)
    bundle.backbone.verify = off_by_one
    with pytest.raises(AssertionError, match="verify differs from sequential steps"):
        check_verify_and_rollback(bundle)
    mar = create_model("mar_tiny").eval()
    plan = mar.backbone.plan
    mar.backbone.plan = lambda state: plan(state)[:-1]               # never visits the last step's positions
    with pytest.raises(AssertionError, match="exactly once"):
        check_plan_and_steps(mar)
