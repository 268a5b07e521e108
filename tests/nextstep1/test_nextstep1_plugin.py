"""NextStep-1 as a plugin: registry and entry point, official key names (docs/backbones.md "NextStep-1"), the text
prompt, the baseline recipe, and training that lowers the loss."""
from __future__ import annotations

from importlib import metadata

import pytest
import torch

from driftar_core.config import load_toml
from driftar_core.factory import create_model, list_models
from driftar_core.plugins import registries
from driftar_nextstep1.build import official_key
from driftar_nextstep1.text import WordTokenizer, class_prompt


def official_shapes(layers: int, heads: int, kv: int, head_dim: int, hidden: int, ffn: int, vocab: int, c: int,
                    fm_width: int, fm_depth: int, pos_grid: int) -> dict[str, tuple[int, ...]]:
    """The official state-dict keys and shapes, as listed in docs/backbones.md "NextStep-1: checkpoint keys"."""
    H, W = hidden, fm_width
    s = {"embed_tokens.weight": (vocab, H), "norm.weight": (H,), "lm_head.weight": (vocab, H),
         "gen_pos_embed": (1, pos_grid ** 2, H), "image_in_projector.weight": (H, c), "image_in_projector.bias": (H,),
         "image_out_projector.weight": (H, H), "image_out_projector.bias": (H,)}
    for i in range(layers):
        p = f"layers.{i}."
        s.update({p + "self_attn.q_proj.weight": (heads * head_dim, H), p + "self_attn.q_proj.bias": (heads * head_dim,),
                  p + "self_attn.k_proj.weight": (kv * head_dim, H), p + "self_attn.k_proj.bias": (kv * head_dim,),
                  p + "self_attn.v_proj.weight": (kv * head_dim, H), p + "self_attn.v_proj.bias": (kv * head_dim,),
                  p + "self_attn.o_proj.weight": (H, heads * head_dim),
                  p + "mlp.gate_proj.weight": (ffn, H), p + "mlp.up_proj.weight": (ffn, H), p + "mlp.down_proj.weight": (H, ffn),
                  p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,)})
    n = "image_head.net."
    s.update({n + "time_embed.mlp.0.weight": (W, 256), n + "time_embed.mlp.0.bias": (W,),
              n + "time_embed.mlp.2.weight": (W, W), n + "time_embed.mlp.2.bias": (W,),
              n + "cond_embed.weight": (W, H), n + "cond_embed.bias": (W,),
              n + "input_proj.weight": (W, c), n + "input_proj.bias": (W,),
              n + "final_layer.adaLN_modulation.1.weight": (2 * W, W), n + "final_layer.adaLN_modulation.1.bias": (2 * W,),
              n + "final_layer.linear.weight": (c, W), n + "final_layer.linear.bias": (c,)})
    for j in range(fm_depth):
        p = f"{n}res_blocks.{j}."
        s.update({p + "in_ln.weight": (W,), p + "in_ln.bias": (W,), p + "mlp.0.weight": (W, W), p + "mlp.0.bias": (W,),
                  p + "mlp.2.weight": (W, W), p + "mlp.2.bias": (W,),
                  p + "adaLN_modulation.1.weight": (3 * W, W), p + "adaLN_modulation.1.bias": (3 * W,)})
    return s


def assert_official_layout(bundle, expected: dict[str, tuple[int, ...]]) -> None:
    ours = {k: tuple(v.shape) for k, v in bundle.state_dict().items()}
    mapped = {official_key(k): v for k, v in expected.items()}
    assert sorted(set(ours) - set(mapped)) == [] and sorted(set(mapped) - set(ours)) == []
    assert {k: ours[k] for k in mapped} == mapped


def test_large_preset_has_the_official_keys_and_shapes():
    with torch.device("meta"):
        bundle = create_model("nextstep1_large")
    assert_official_layout(bundle, official_shapes(48, 40, 8, 128, 5120, 13824, 152064, 64, 1536, 12, 32))
    assert bundle.backbone.token_shape == (256, 64) and bundle.head.nfe == 50
    assert 14e9 < bundle.num_params() < 16e9


def test_tiny_preset_has_the_same_layout():
    bundle = create_model("nextstep1_tiny")
    vocab = len(WordTokenizer())
    assert_official_layout(bundle, official_shapes(4, 4, 2, 32, 128, 352, vocab, 4, 128, 2, 8))


def test_registered_through_the_entry_point():
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="driftar")}
    assert eps.get("nextstep1") == "driftar_nextstep1.plugin"
    assert {"nextstep1_tiny", "nextstep1_large"} <= set(list_models("nextstep1*"))
    reg = registries()
    assert "flow_matching" in reg.heads and "nextstep1/baseline" in reg.recipes


def test_baseline_recipe_resolves():
    from driftar_core.cli.train import resolve_configs
    cfg, model_cfg = resolve_configs("nextstep1", "baseline", None, ("train.steps=5",))
    assert cfg.model.arch == "nextstep1_tiny" and cfg.train.steps == 5
    assert model_cfg.seq_len == 64 and model_cfg.lm_loss_weight == 0.01
    assert load_toml(registries().recipes.get("nextstep1/baseline").path)["model"]["arch"] == "nextstep1_tiny"


def test_bundle_saves_and_loads_strictly(make_bundle, tmp_path):
    from driftar_core.bundle import load_bundle
    bundle = make_bundle()
    bundle.save(tmp_path / "m")
    loaded = load_bundle(tmp_path / "m")
    assert loaded.config == bundle.config
    for k, v in bundle.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)


def test_prompt_prefix_is_left_padded():
    text = WordTokenizer()
    assert class_prompt(3) == "a handwritten digit three"
    ids, valid = text.batch_prefix([class_prompt(3), ""], grid=8)
    assert text.decode(ids[0]) == "<|bos|> a handwritten digit three <|image_area|> 8 * 8 <|begin_of_image|>"
    assert valid[1] == [False] * 4 + [True] * 6 and ids[1][-1] == text.boi_id
    with pytest.raises(ValueError, match="class 10"):
        class_prompt(10)


def test_a_few_training_steps_lower_the_loss(make_bundle):
    from driftar_core.data.digits import DigitsDataset
    from driftar_core.train.objective import BaselineObjective
    data = DigitsDataset("train", image_size=8)
    images, labels = data.images[:32], data.labels[:32]
    objective = BaselineObjective(make_bundle(head={"width": 32, "depth": 2, "num_sampling_steps": 3,
                                                    "batch_mul": 1}).train())
    opt = torch.optim.AdamW(objective.parameters(), lr=3e-3)
    torch.manual_seed(0)
    losses = []
    for _ in range(20):
        loss, metrics = objective(images, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        assert set(metrics) == {"head_loss", "aux_loss"}
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])          # ~0.65-0.71 over seeds
