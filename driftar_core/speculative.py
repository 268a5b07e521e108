"""Entropy-informed speculative decoding for causal continuous-token AR models (docs/method.md "Speculative decoding").

A function over (target backbone, draft, head), like ``driftar_core.sampling.generate``, that cuts
TARGET forward passes: one target pass verifies k drafted tokens. One round, n tokens committed:

    for m in 0..k-1:                                    # 1. the draft runs ahead on its own outputs
        z^, E^ = draft.step(dstate, n + m)              #    (its own KV cache; one draft pass each)
        x^[n+m] = head(z^, E^, eps[n+m]); draft.commit(x^[n+m])
        stop early if mean E^ < gamma * EMA(E_target)   #    docs/method.md "Early stop", optional
    z, E = target.verify(tstate, x^[n..n+k-1])          # 2. ONE target pass: z, E for n .. n+k
    x*[n..n+k] = head(z, E, eps[n..n+k])                #    one batched head call, SAME noise
    a = longest prefix with |x^ - x*|_2 / sqrt(c) <= tau0 + kappa * sigma(E)   # 3. V1 in docs/method.md
    target.rollback(k - a); draft.rollback(k - a)       # 4. both caches drop the rejected drafts
    commit x*[n+a] to both                              #    correction (a < k) or bonus (a = k)
    n += a + 1

A feature-level draft (a :class:`~driftar_core.interfaces.FeatureDraft`, e.g. method/window_draft.py) replaces step 1 by

    z^, E^ = draft.propose(dstate, eps[n..n+k-1])       # k draft passes on its own features, no head
    x^[n..n+k-1] = head(z^, E^, eps[n..n+k-1])          # ONE batched head call for the k drafts

and, instead of rollback + commit, observes the target's own z, E of the committed positions
n .. n+a from the verify pass. Round 0 has no target feature yet: it drafts nothing (one target step).

Noise is drawn once per position before decoding (``draw_noise``) and shared by the draft's head
call and the target's, so with fixed noise sequential decoding is a deterministic map and deviation
from it is measurable. With tau0 = kappa = 0 only bit-identical drafts are accepted, every committed
token is the target's own sample, and the output equals ``generate`` with the same noise (up to the
float round-off of a batched versus a one-row forward). The accepted drafts are committed as drafted
(the target's keys were computed from them), never replaced by x*.

What the objects must provide:

- target: a :class:`~driftar_core.interfaces.SpeculativeBackbone` with one token per AR step in
  raster order (NextStep-1). ``verify`` appends the drafts to the state and returns z, E for the k + 1
  next positions; ``rollback(m)`` drops the last m tokens and their cached keys.
- draft: either feature-level (new_state / propose / observe, see above) or
  new_state / step / commit / rollback with the same signatures (any causal model that maps
  the committed tokens to a head condition z with its own cache; e.g. NextStep-1's
  ``build_layer_draft``: the target's first layers). Its z goes through the bundle's head.
- head: the bundle's :class:`~driftar_core.interfaces.TokenHead`; ``sample`` must accept ``cfg`` as a
  float or a per-row tensor [N, 1] (positions of one round can have different CFG scales).

Batches commit min over samples of the accepted length (simple, exact per sample; docs/method.md
"Batching"); at batch 1 nothing is lost. CFG runs in the same passes (the state doubles the batch).
Every pass is counted: backbone_passes = target passes (= rounds), draft_passes, head_nfe (draft and
target head calls, both sequential); ``extra`` has the statistics of docs/method.md "Acceptance statistics".
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from driftar_core.interfaces import FeatureDraft, PassCounts, SpeculativeBackbone, StepOutput, TokenDraft
from driftar_core.method.prior import MISSING_ENTROPY, entropy_sigma
from driftar_core.sampling import CfgSchedule, SampleOutput, cfg_per_token, draw_noise


@dataclass
class RoundInfo:
    """What one round did (handed to ``on_round``; the states let tests audit the caches)."""

    index: int                  # 0-based round
    start: int                  # tokens committed before the round
    drafted: int                # k_eff
    accepted: int               # a (committed drafts, min over the batch)
    accepted_per_sample: Tensor  # [B] longest accepted prefix of each sample
    distance: Tensor            # [B, k] |x^ - x*| / sqrt(c)
    tolerance: Tensor           # [B, k] tau0 + kappa * sigma(E)
    committed: int              # tokens committed after the round
    target_state: Any
    draft_state: Any


def default_sigma(head: Any) -> Callable[[Tensor], Tensor]:
    """sigma(E) of the drift decoder's entropy prior (Eq. 6 with its floor); Eq. 6's defaults for another head."""
    from driftar_core.method.drift_decoder import DriftDecoder
    return head.prior.sigma if isinstance(head, DriftDecoder) else entropy_sigma


def head_tokens(head: Any, out: StepOutput, noise: Tensor, cfgs: list[float], temperature: float) -> Tensor:
    """z [B', m, D] of m consecutive positions, noise [B, m, k, c], a CFG scale per position -> [B, m, c].

    Rows are laid out as ``generate`` lays them ([cond (B m); uncond (B m)]), so one position gives the
    same head call as a plain AR step.
    """
    B, m = noise.shape[:2]
    z = out.z.reshape(-1, out.z.shape[-1])                                     # [B' m, D]
    entropy = None if out.entropy is None else out.entropy.reshape(-1)         # [B' m]
    cfg: float | Tensor = cfgs[0]
    if any(c != cfgs[0] for c in cfgs):
        cfg = torch.tensor(cfgs, dtype=z.dtype, device=z.device).repeat(B)[:, None]  # [B m, 1]
    return head.sample(z, noise.flatten(0, 1), cfg=cfg, temperature=temperature, entropy=entropy).view(B, m, -1)


def shuffle_samples(out: StepOutput, batch: int) -> StepOutput:
    """Negative control: every sample gets the next sample's z and E (cond and uncond halves alike)."""
    if batch < 2:
        raise ValueError("the negative control needs a batch of at least 2 samples")
    def roll(x: Tensor) -> Tensor:
        return x.unflatten(0, (-1, batch)).roll(1, dims=1).flatten(0, 1)
    return StepOutput(z=roll(out.z), entropy=None if out.entropy is None else roll(out.entropy))


@torch.no_grad()
def speculative_generate(bundle: Any, cond: Any, *, draft: Any = None, draft_len: int = 4, tau0: float = 0.0,
                         kappa: float = 0.0, cfg: float | None = None, cfg_schedule: CfgSchedule | None = None,
                         temperature: float | None = None, generator: torch.Generator | None = None,
                         noise: Tensor | None = None, sigma: Callable[[Tensor], Tensor] | None = None,
                         early_stop_gamma: float | None = None, entropy_ema_init: float | None = None,
                         entropy_ema_decay: float = 0.9, negative_control: bool = False,
                         on_round: Callable[[RoundInfo], None] | None = None,
                         num_iter: int | None = None) -> SampleOutput:
    """Sample images for ``cond`` with speculative decoding (see the module docstring).

    draft: the draft model (default ``bundle.draft``). draft_len: k, drafts per round (0 = sequential
    through verify). tau0, kappa: the V1 tolerance tau0 + kappa * sigma(E_target) in token RMS units;
    0, 0 reproduces ``generate``. sigma: E -> sigma(E) (default: the head's prior, else Eq. 6).
    early_stop_gamma: stop drafting when the draft's mean E falls below gamma * EMA(target E)
    (docs/method.md "Early stop"; gamma = 0.8 there); the EMA starts at ``entropy_ema_init`` (a training-set
    statistic) or at the first round's target entropy (a feature-level draft proposes all k first, so
    there the stop shortens what is decoded and verified; every draft pass that ran is counted).
    negative_control: verify against the next
    sample's target features (acceptance must collapse). Unset sampling arguments fall back to
    ``bundle.config.sampling``; ``noise`` [B, L, k, c] overrides the generator's draw. ``num_iter`` is
    accepted for ``generate``'s signature and must be None or L (one token per AR step).
    """
    backbone, head, tok = bundle.backbone, bundle.head, bundle.tokenizer
    draft = bundle.draft if draft is None else draft
    if draft is None:
        raise ValueError("speculative decoding needs a draft model: pass draft=... or use a bundle with one")
    if draft_len < 0 or tau0 < 0 or kappa < 0:
        raise ValueError(f"draft_len, tau0 and kappa must be >= 0, got {draft_len}, {tau0}, {kappa}")
    defaults = bundle.config.sampling
    cfg = defaults.cfg if cfg is None else cfg
    cfg_schedule = defaults.cfg_schedule if cfg_schedule is None else cfg_schedule
    temperature = defaults.temperature if temperature is None else temperature
    sigma = default_sigma(head) if sigma is None else sigma
    L, _ = tok.token_shape
    if num_iter is not None and num_iter != L:
        raise ValueError(f"speculative decoding commits one token per AR step: num_iter must be {L}, got {num_iter}")
    B, use_cfg, device = len(cond), cfg != 1.0, bundle.device
    tstate = backbone.new_state(cond, num_iter=L, cfg=use_cfg, generator=generator)
    dstate = draft.new_state(cond, num_iter=L, cfg=use_cfg, generator=generator)
    if noise is None:
        noise = draw_noise(head, B, L, generator, device)
    cfgs = cfg_per_token(cfg, cfg_schedule, L)                             # one token per step, raster order

    stats = {"rounds": 0, "drafted": 0, "accepted": 0, "accepted_per_sample": 0.0, "early_stops": 0,
             "draft_head_nfe": 0, "backbone_s": 0.0, "draft_s": 0.0, "head_s": 0.0}
    counts = PassCounts()
    ema, n = entropy_ema_init, 0
    feature_level = isinstance(draft, FeatureDraft)
    while n < L:
        # 1. draft up to k tokens ahead, on the draft's own outputs
        k, drafts = min(draft_len, L - 1 - n), []
        if feature_level:
            # k features in k draft passes, then ONE head call for all k drafted tokens. Round 0 has no
            # target feature to start from: it is a plain target step (k = 0) that seeds the window.
            k = k if n else 0
            if k:
                t0 = time.perf_counter()
                d_out = draft.propose(dstate, noise[:, n:n + k, 0])               # z^ [B', k, D], E^ [B', k]
                ran = k                                                        # the early stop truncates after the fact
                if early_stop_gamma is not None and ema is not None and k > 1:
                    low = (d_out.entropy[:B].float().mean(0) < early_stop_gamma * ema).tolist()
                    if True in low[:k - 1]:                                    # over-confident at step m: stop there
                        stats["early_stops"] += 1
                        k = low.index(True) + 1
                        d_out = StepOutput(z=d_out.z[:, :k], entropy=d_out.entropy[:, :k])
                t1 = time.perf_counter()
                drafts.append(head_tokens(head, d_out, noise[:, n:n + k], cfgs[n:n + k], temperature))  # [B, k, c]
                stats["draft_s"] += t1 - t0
                stats["head_s"] += time.perf_counter() - t1
                counts.draft_passes += ran                                     # every pass that ran
                counts.head_nfe += head.nfe
                stats["draft_head_nfe"] += head.nfe
        for m in range(0 if feature_level else k):
            p, t0 = n + m, time.perf_counter()
            pos = torch.full((B, 1), p, dtype=torch.long, device=device)
            d_out = draft.step(dstate, pos)                                    # z^ [B', 1, D], E^ [B', 1]
            t1 = time.perf_counter()
            x_hat = head_tokens(head, d_out, noise[:, p:p + 1], cfgs[p:p + 1], temperature)  # [B, 1, c]
            stats["draft_s"] += t1 - t0
            stats["head_s"] += time.perf_counter() - t1
            draft.commit(dstate, pos, x_hat)
            drafts.append(x_hat)
            counts.draft_passes += 1
            counts.head_nfe += head.nfe
            stats["draft_head_nfe"] += head.nfe
            if (early_stop_gamma is not None and ema is not None and d_out.entropy is not None
                    and m + 1 < k and float(d_out.entropy[:B].mean()) < early_stop_gamma * ema):
                stats["early_stops"] += 1                                      # over-confident draft: stop here
                k = m + 1
                break
        drafted = torch.cat(drafts, 1) if drafts else noise.new_zeros(B, 0, noise.shape[-1])  # [B, k, c]

        # 2. verify all k drafts in ONE target pass; the target's tokens with the SAME noise
        t0 = time.perf_counter()
        out = backbone.verify(tstate, drafted)                                 # z [B', k+1, D], E [B', k+1]
        t1 = time.perf_counter()
        own = out                                                              # what a feature draft observes
        if negative_control:
            out = shuffle_samples(out, B)
        x_star = head_tokens(head, out, noise[:, n:n + k + 1], cfgs[n:n + k + 1], temperature)  # [B, k+1, c]
        stats["backbone_s"] += t1 - t0
        stats["head_s"] += time.perf_counter() - t1
        counts.backbone_passes += 1
        counts.head_nfe += head.nfe

        # 3. accept the longest prefix within tau0 + kappa * sigma(E_target)  (docs/method.md "Acceptance rule (V1)")
        e_target = (out.entropy[:B].float() if out.entropy is not None
                    else torch.full((B, k + 1), MISSING_ENTROPY, device=drafted.device))  # [B, k+1]
        dist = (drafted - x_star[:, :k]).float().pow(2).mean(-1).sqrt()       # [B, k]
        tol = tau0 + kappa * sigma(e_target[:, :k]).to(dist.device)            # [B, k]
        per_sample = (dist <= tol).long().cumprod(1).sum(1)                    # [B]
        a = int(per_sample.min()) if k else 0

        # 4. roll both caches back to the accepted prefix; commit one exact target token
        backbone.rollback(tstate, k - a)
        pos = torch.full((B, 1), n + a, dtype=torch.long, device=device)
        backbone.commit(tstate, pos, x_star[:, a:a + 1])
        if feature_level:                                                      # the target's own z, E of n .. n+a
            draft.observe(dstate, StepOutput(z=own.z[:, :a + 1], entropy=own.entropy[:, :a + 1]),
                          noise[:, n:n + a + 1, 0])
        else:
            draft.rollback(dstate, k - a)
            draft.commit(dstate, pos, x_star[:, a:a + 1])
        mean_e = float(e_target[:, :a + 1].mean())
        ema = mean_e if ema is None else entropy_ema_decay * ema + (1 - entropy_ema_decay) * mean_e
        if on_round is not None:
            on_round(RoundInfo(stats["rounds"], n, k, a, per_sample, dist, tol, n + a + 1, tstate, dstate))
        stats["rounds"] += 1
        stats["drafted"] += k
        stats["accepted"] += a
        stats["accepted_per_sample"] += float(per_sample.float().mean())
        n += a + 1

    rounds, drafted_total = stats["rounds"], max(stats["drafted"], 1)
    counts.extra = {
        "rounds": rounds,
        "acceptance_rate": stats["accepted"] / drafted_total,                  # committed drafts / drafts
        "acceptance_rate_per_sample": stats["accepted_per_sample"] / drafted_total,
        "mean_accepted_len": stats["accepted"] / rounds,
        "tokens_per_target_pass": L / rounds,
        "drafted": stats["drafted"], "accepted": stats["accepted"], "early_stops": stats["early_stops"],
        "draft_head_nfe": stats["draft_head_nfe"],
        "backbone_s": stats["backbone_s"], "draft_s": stats["draft_s"], "head_s": stats["head_s"],
    }
    tokens = backbone.tokens(tstate)                                           # [B, L, c]
    images = tok.decode(tokens).clamp(-1, 1)
    return SampleOutput(tokens=tokens, images=images, counts=counts)


def speculative_settings(spec: Any) -> dict[str, Any]:
    """``speculative_generate``'s keyword arguments from a :class:`~driftar_core.method.configs.SpeculativeConfig`
    (draft length, tolerance, early stop; not ``enabled`` / ``max_batch``, which choose whether to call it)."""
    return dict(draft_len=spec.draft_len, tau0=spec.tau0, kappa=spec.kappa,
                early_stop_gamma=spec.early_stop_gamma, entropy_ema_init=spec.entropy_ema_init)


def make_sampler(spec: Any) -> Callable[..., SampleOutput]:
    """The sampling function a :class:`~driftar_core.method.configs.SamplerSpec` describes: ``generate``
    (plain), or ``speculative_generate`` with its settings for batches of at most
    ``spec.speculative.max_batch`` samples and ``generate`` for larger ones (see ``SpeculativeConfig.max_batch``)."""
    from driftar_core.sampling import generate
    if spec.kind == "plain":
        return generate
    settings, limit = speculative_settings(spec.speculative), spec.speculative.max_batch

    def sample(bundle: Any, cond: Any, **kwargs: Any) -> SampleOutput:
        if len(cond) > limit:
            return generate(bundle, cond, **kwargs)
        return speculative_generate(bundle, cond, **{**settings, **kwargs})
    return sample


def select_sampler(bundle: Any, speculative: bool | None = None, *, draft_len: int | None = None,
                   tau0: float | None = None, kappa: float | None = None) -> Callable[..., SampleOutput]:
    """The sampler for ``bundle``: ``speculative`` None = the bundle's default (``bundle.sampler``, a
    :class:`~driftar_core.method.configs.SamplerSpec`); True = speculative decoding with the model's ``speculative`` config, each of
    draft_len / tau0 / kappa overridable; False = plain sequential decoding (``generate``)."""
    import functools

    from driftar_core.method.configs import SpeculativeConfig
    from driftar_core.sampling import generate
    overrides = {k: v for k, v in (("draft_len", draft_len), ("tau0", tau0), ("kappa", kappa)) if v is not None}
    if speculative is False:
        if overrides:
            names = ", ".join("--" + k.replace("_", "-") for k in overrides)
            raise ValueError(f"the options {names} only apply to speculative decoding "
                             "(drop them, or drop --no-speculative)")
        return generate
    if speculative is None and not overrides:
        from driftar_core.bundle import ModelBundle
        if not isinstance(bundle, ModelBundle):     # an exporter's runner (load_runner) samples with its own loop
            return type(bundle).default_sampler
        return make_sampler(bundle.sampler)
    if bundle.draft is None:
        raise ValueError("speculative decoding needs a model with a draft (e.g. nextstep1_tiny_drift.digits); "
                         "this one has none: sample without --speculative")
    if not isinstance(bundle.backbone, SpeculativeBackbone) or not isinstance(bundle.draft, (FeatureDraft, TokenDraft)):
        raise ValueError(f"{bundle.arch or bundle.backbone_name} cannot decode speculatively: speculative decoding needs "
                         "a backbone that verifies drafts in one pass and rolls back (SpeculativeBackbone) and a "
                         "TokenDraft or FeatureDraft (e.g. nextstep1_tiny_drift.digits); sample without --speculative")
    spec = bundle.sampler.speculative or SpeculativeConfig()   # the model's declared settings, else the defaults
    return functools.partial(speculative_generate, **{**speculative_settings(spec), **overrides})  # any batch size
