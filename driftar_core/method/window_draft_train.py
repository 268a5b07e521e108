"""Recipe ``draft``: distil the feature-level window draft from a finished Drift-AR model.

    rollouts  = the model's own sequential sampler at its sampling settings, noise eps recorded
    rows      = [z^c, z^u, E^c, E^u, eps] per position: the target's features of each rollout in ONE
                cached verify pass (exactly what the speculative sampler's verify pass returns)
    per step: (sequence, start position) examples; the draft is unrolled ``unroll`` steps on its OWN
              predictions (self-feed, docs/method.md "Running ahead"), and at every step
              L = reg_weight     * SmoothL1(z_draft, sg z)                       (Eq. 3, both CFG rows)
                + entropy_weight * |E_draft - sg E|                              (entropy alignment)
                + token_weight   * ||g(z_draft, E_draft, eps) - x||^2 / c        (through the frozen head)

The last term trains what the acceptance rule tests (the token the head makes from the drafted
feature, docs/method.md "Acceptance rule (V1)"). Only the draft trains; target, head and tokenizer are frozen. The
rollout buffer is rebuilt from ``train.seed`` on resume (it depends only on the frozen model).
The training images the trainer hands over are not used.

Logged: ``accept_1`` (step-1 acceptance under the model's speculative tolerance) and
``tokens_per_round`` = 1 + sum over draft steps of the prefix acceptance (the cost model's
E[tokens per round] at draft length ``unroll``, docs/method.md "Acceptance statistics"), on the training examples.
"""
from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from driftar_core.config import Strict, validate
from driftar_core.method.configs import SpeculativeConfig
from driftar_core.method.drift_decoder import DriftDecoder
from driftar_core.method.window_draft import WindowDraft
from driftar_core.sampling import cfg_per_token, draw_noise, generate
from driftar_core.train.objective import Metrics, TrainObjective


class WindowDraftMethodConfig(Strict):
    """``[method]`` of the ``draft`` recipe (the draft's own sizes and loss weights are in the model config)."""

    batch: int = 1024           # (sequence, start) examples per step


@torch.no_grad()
def sample_rollouts(bundle: nn.Module, count: int, batch: int, generator: torch.Generator,
                    say: Any = print) -> dict[str, Tensor]:
    """``count`` sequences from the bundle's sequential sampler -> rows [N, w - 1 + L, R] (zero rows
    before position 0), tokens [N, L, c]."""
    draft, backbone, head = bundle.draft, bundle.backbone, bundle.head
    sampling, L = bundle.config.sampling, bundle.tokenizer.token_shape[0]
    classes, use_cfg = bundle.config.class_num, sampling.cfg != 1.0
    was_training = bundle.training
    bundle.eval()
    rows, tokens, t0 = [], [], time.perf_counter()
    try:
        for start in range(0, count, batch):
            labels = torch.arange(start, min(start + batch, count), device=bundle.device) % classes
            noise = draw_noise(head, len(labels), L, generator, bundle.device).to(draft.in_proj.weight.dtype)  # [B, L, 1, c]
            x = generate(bundle, labels, noise=noise).tokens                    # [B, L, c]
            state = backbone.new_state(labels, num_iter=L, cfg=use_cfg)
            feats = backbone.verify(state, x[:, :L - 1])                        # z [B', L, D], E [B', L]
            r = draft.rows_from(feats, noise[:, :, 0], use_cfg)                 # [B, L, R]
            rows.append(torch.cat([r.new_zeros(len(labels), draft.window - 1, r.shape[-1]), r], 1))
            tokens.append(x)
            say(f"draft rollouts: {start + len(labels)}/{count} ({time.perf_counter() - t0:.0f} s)")
    finally:
        bundle.train(was_training)
    return {"rows": torch.cat(rows), "tokens": torch.cat(tokens)}


def unrolled_loss(draft: nn.Module, head: nn.Module, rows: Tensor, tokens: Tensor, start: Tensor, *,
                  unroll: int, cfg_table: Tensor, temperature: float, tolerance: Any, config: Any
                  ) -> tuple[Tensor, Metrics]:
    """rows [N, w - 1 + L, R] and tokens [N, L, c] of N examples, start [N] = the position whose row is
    the window's last -> (loss, metrics). See the module docstring."""
    N, L, c = tokens.shape
    w, D = draft.window, draft.z_dim
    window = rows[torch.arange(N, device=rows.device)[:, None], start[:, None] + torch.arange(w, device=rows.device)]
    losses, alive, tokens_per_round, accept_1 = [], torch.ones(N, device=rows.device), 1.0, None
    terms = {"reg": 0.0, "ent": 0.0, "tok": 0.0}
    ar = torch.arange(N, device=rows.device)
    for m in range(unroll):
        nxt = start + m + 1                                                     # position being drafted
        valid = (nxt < L).float()                                               # [N]
        nxt = nxt.clamp(max=L - 1)
        pred = draft(window, nxt)                                               # [N, 2D + 2]
        true = rows[ar, nxt + w - 1]                                            # [N, R]
        eps = true[:, 2 * D + 2:]                                               # [N, c]
        reg = F.smooth_l1_loss(pred[:, :2 * D], true[:, :2 * D], reduction="none",
                               beta=config.smooth_l1_beta).mean(-1)             # [N]
        ent = (pred[:, 2 * D:] - true[:, 2 * D:2 * D + 2]).abs().sum(-1)         # [N]
        cond = draft.condition(pred, cfg=True)                                  # z [2N, D], E [2N] [cond; uncond]
        x = head.sample(cond.z, eps[:, None], cfg=cfg_table[nxt][:, None], temperature=temperature,
                        entropy=cond.entropy)                                   # [N, c]
        tok = (x - tokens[ar, nxt]).pow(2).mean(-1)                             # [N]
        per = config.reg_weight * reg + config.entropy_weight * ent + config.token_weight * tok
        losses.append((per * valid).sum() / valid.sum().clamp(min=1))
        with torch.no_grad():
            ok = (tok.sqrt() <= tolerance(true[:, 2 * D])).float()              # V1 against the target's E
            alive = alive * ok
            tokens_per_round += float((alive * valid).sum() / valid.sum().clamp(min=1))
            accept_1 = accept_1 if accept_1 is not None else (ok * valid).sum() / valid.sum().clamp(min=1)
            for name, v in (("reg", reg), ("ent", ent), ("tok", tok)):
                terms[name] += float((v * valid).sum() / valid.sum().clamp(min=1)) / unroll
        window = torch.cat([window[:, 1:], torch.cat([pred, eps], -1)[:, None]], 1)  # self-feed
    metrics = {f"draft_{k}": torch.tensor(v) for k, v in terms.items()}
    metrics.update(accept_1=accept_1, tokens_per_round=torch.tensor(tokens_per_round))
    return sum(losses) / unroll, metrics


class WindowDraftObjective(TrainObjective):
    """Trains ``bundle.draft`` (a WindowDraft) on rollouts of the frozen bundle; see the module docstring."""

    find_unused_parameters = True

    def __init__(self, bundle: nn.Module, config: WindowDraftMethodConfig, seed: int):
        super().__init__(bundle)
        if not isinstance(bundle.draft, WindowDraft):
            raise ValueError("the draft recipe trains a window draft: use a model whose drift_ar.draft.kind is 'window' "
                             f"(got draft {type(bundle.draft).__name__})")
        if not isinstance(bundle.head, DriftDecoder):
            raise ValueError("the draft recipe distils from a Drift-AR model with the 1-NFE head "
                             "(model.init_from = a trained drift run or zoo model)")
        self.config, self.seed = config, seed
        bundle.requires_grad_(False)
        bundle.draft.requires_grad_(True)
        self._buffer: dict[str, Tensor] | None = None

    def buffer(self) -> dict[str, Tensor]:
        """The rollouts (built on first use, not at construction) and the guidance scale per position."""
        if self._buffer is None:
            bundle, dcfg, sampling = self.bundle, self.bundle.draft.config, self.bundle.config.sampling
            g = torch.Generator().manual_seed(self.seed)
            self._buffer = sample_rollouts(bundle, dcfg.rollouts, dcfg.rollout_batch, g,
                                           say=lambda m: print(m, flush=True))
            L = bundle.tokenizer.token_shape[0]
            self._buffer["cfg_table"] = torch.tensor(cfg_per_token(sampling.cfg, sampling.cfg_schedule, L),
                                                     device=bundle.device)   # [L]
        return self._buffer

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Metrics]:
        bundle, buf = self.bundle, self.buffer()
        sampling, L = bundle.config.sampling, bundle.tokenizer.token_shape[0]
        spec = bundle.sampler.speculative or SpeculativeConfig()     # the model's declared settings
        idx = torch.randint(buf["tokens"].shape[0], (self.config.batch,), device=buf["tokens"].device)
        start = torch.randint(0, L - 1, (self.config.batch,), device=idx.device)      # positions 0 .. L-2
        sigma = bundle.head.prior.sigma
        return unrolled_loss(bundle.draft, bundle.head, buf["rows"][idx], buf["tokens"][idx], start,
                             unroll=bundle.draft.config.unroll, cfg_table=buf["cfg_table"],
                             temperature=sampling.temperature,
                             tolerance=lambda e: spec.tau0 + spec.kappa * sigma(e), config=bundle.draft.config)

    @classmethod
    def from_config(cls, run_config: Any, bundle: nn.Module) -> "WindowDraftObjective":
        return cls(bundle, validate(WindowDraftMethodConfig, run_config.method, where="method"),
                   seed=run_config.train.seed)
