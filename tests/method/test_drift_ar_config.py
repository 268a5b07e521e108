"""The Drift-AR config section (``drift_ar``) every backbone config embeds: defaults per backbone, partial
overrides, draft kinds, and configs saved before the section existed (flat keys) loading unchanged."""
from __future__ import annotations

import pytest
import torch

from driftar_core.method.assemble import drift_ar_bundle
from driftar_core.method.configs import DriftARConfig, LayerDraftConfig, WindowDraftConfig
from driftar_core.tokenizers.patch import PatchTokenizer
from driftar_mar.config import MARConfig
from driftar_nextstep1.config import NextStep1Config

DECODER = {"width": 64, "depth": 2}


def test_a_flat_mar_config_of_an_earlier_release_loads_into_the_section():
    old = MARConfig(head_type="drift", drift=DECODER, draft={"dim": 96, "depth": 1, "num_heads": 4})
    new = MARConfig(head_type="drift", drift_ar={"decoder": DECODER, "draft": {"dim": 96, "depth": 1, "num_heads": 4}})
    assert old == new and old.drift_ar.decoder.width == 64 and old.drift_ar.draft.kind == "transformer"
    assert "drift" not in old.model_dump() and "draft" not in old.model_dump()       # saved in the new layout


@pytest.mark.parametrize("kind, expect", [("window", WindowDraftConfig), ("layer", LayerDraftConfig)])
def test_a_flat_nextstep1_config_keeps_its_draft_and_speculative_settings(kind, expect):
    old = NextStep1Config(head_type="drift", drift=DECODER, draft_type=kind, draft_layers=2,
                          window_draft={"window": 3, "width": 32}, speculative={"draft_len": 6, "kappa": 0.5})
    draft = old.drift_ar.draft
    assert isinstance(draft, expect) and old.drift_ar.decoder.width == 64
    assert (draft.window, draft.width) == (3, 32) if kind == "window" else draft.depth == 2
    assert (old.drift_ar.speculative.draft_len, old.drift_ar.speculative.kappa) == (6, 0.5)


def test_a_partial_section_keeps_the_backbone_defaults_and_a_new_kind_starts_from_its_own():
    cfg = NextStep1Config(head_type="drift", drift_ar={"speculative": {"kappa": 0.5}})
    assert cfg.drift_ar.decoder.width == 128                # NextStep-1's default, not DriftDecoderConfig's 256
    assert cfg.drift_ar.speculative.draft_len == 6 and cfg.drift_ar.draft.kind == "window"
    cfg = NextStep1Config(head_type="drift", drift_ar={"draft": {"kind": "layer", "depth": 2}})
    assert cfg.drift_ar.draft == LayerDraftConfig(depth=2)  # no window-draft key leaks into the layer draft
    assert MARConfig().drift_ar.speculative is None         # MAR is masked: it declares no speculative settings


def test_a_backbone_refuses_a_draft_kind_it_cannot_build():
    with pytest.raises(ValueError, match="MAR builds drafts of kind 'transformer'"):
        MARConfig(head_type="drift", drift_ar={"draft": {"kind": "window"}})
    with pytest.raises(ValueError, match="drift_ar.draft.depth"):
        NextStep1Config(head_type="drift", drift_ar={"draft": {"kind": "layer", "depth": 9}})
    with pytest.raises(ValueError, match="discriminator|kind"):
        DriftARConfig(draft={"kind": "lstm"})


class _Backbone(torch.nn.Module):
    z_dim = 8


def test_the_assembler_builds_the_window_draft_and_asks_for_the_backbones_own():
    tok = PatchTokenizer(8, 1, 2)                                  # L = 16 tokens of c = 4
    phi = torch.nn.Identity()
    window = DriftARConfig(draft=WindowDraftConfig(window=2, width=16, depth=1), speculative={"draft_len": 2})
    bundle = drift_ar_bundle(None, window, tok, _Backbone(), backbone_name="toy", phi=phi)
    assert type(bundle.draft).__name__ == "WindowDraft" and bundle.sampler.kind == "speculative"
    assert bundle.head.prior is not None and bundle.phi is phi
    with pytest.raises(ValueError, match="window draft is built by the core"):
        drift_ar_bundle(None, window, tok, _Backbone(), backbone_name="toy", phi=phi, draft=torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="needs the backbone's own draft"):
        drift_ar_bundle(None, DriftARConfig(), tok, _Backbone(), backbone_name="toy", phi=phi)
    plain = drift_ar_bundle(None, DriftARConfig(), tok, _Backbone(), backbone_name="toy", phi=phi, draft=torch.nn.Linear(1, 1))
    assert plain.sampler.kind == "plain"                           # no speculative settings: samples plainly
