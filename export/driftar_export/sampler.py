"""The sampler an export bundle records, as the eager function that runs it (torch-free at import).

``settings`` is the manifest's ``sampler`` (or ``samplers[kind]``): every argument of
``driftar_core.sampling.generate`` or ``speculative.speculative_generate`` resolved to a value, plus
``speculate_up_to`` for the default sampler (larger batches decode plainly). The exporter's sampler
check, the ``Runner`` and ``driftar run --compare`` all call this one function.
"""
from __future__ import annotations

from typing import Any, Callable

SPECULATIVE_KEYS = ("draft_len", "tau0", "kappa", "early_stop_gamma", "entropy_ema_init", "entropy_ema_decay")
SAMPLING_KEYS = ("num_iter", "cfg", "cfg_schedule", "temperature")


def torch_sampler(settings: dict[str, Any]) -> Callable[..., Any]:
    """``sampler(bundle, labels, generator=g)`` running the PyTorch loop the settings describe."""
    from driftar_core.sampling import generate
    from driftar_core.speculative import speculative_generate
    func = generate if settings["kind"] == "plain" else speculative_generate
    keys = SAMPLING_KEYS if settings["kind"] == "plain" else (*SAMPLING_KEYS[1:], *SPECULATIVE_KEYS)
    kw = {k: settings[k] for k in keys}
    plain_kw = {k: settings[k] for k in SAMPLING_KEYS[1:]}
    limit = settings.get("speculate_up_to")                # the default sampler decodes larger batches plainly

    def sample(bundle: Any, labels: Any, generator: Any = None, noise: Any = None) -> Any:
        if limit is not None and len(labels) > limit:
            return generate(bundle, labels, generator=generator, noise=noise, **plain_kw)
        return func(bundle, labels, generator=generator, noise=noise, **kw)
    return sample
