"""``driftar sample``: images from a run, a model directory or a registry/zoo name, as a PNG grid or .npz."""
from __future__ import annotations

from pathlib import Path

import click

from driftar_core.cli.options import COUNT, sampling_options, speculative_options


@click.command("sample")
@click.option("--checkpoint", "-c", required=True, help="Run dir, model dir, or name (e.g. mar_tiny.digits).")
@click.option("-n", "num", type=COUNT, default=64, show_default=True, help="Number of images (ignored with --per-class).")
@click.option("--class", "cls", type=int, multiple=True, help="Class label(s) to draw; default: cycle 0..K-1.")
@click.option("--per-class", type=COUNT, default=None, help="Draw N samples of every class.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="grid.png or samples.npz.")
@click.option("--batch-size", type=COUNT, default=64, show_default=True)
@sampling_options
@speculative_options
def sample(checkpoint: str, num: int, cls: tuple[int, ...], per_class: int | None, out: str, batch_size: int,
           num_iter: int | None, cfg: float | None, temperature: float | None, seed: int, speculative: bool | None,
           draft_len: int | None, tau0: float | None, kappa: float | None) -> None:
    """Sample class-conditional images and report the forward passes spent.

    Models with a draft (nextstep1_tiny_drift.digits) decode speculatively by default."""
    import numpy as np
    import torch

    from driftar_core.bundle import NonFiniteError
    from driftar_core.files import check_writable_file
    from driftar_core.resolve import load_model, sampling_overrides
    from driftar_core.speculative import select_sampler
    from driftar_core.viz import save_grid, to_uint8

    suffix = Path(out).suffix.lower()
    if suffix not in (".png", ".npz"):
        raise click.BadParameter(f"--out must end in .png or .npz, got {out!r}", param_hint="--out")
    check_writable_file(out, "--out")                   # before any work, not after the sampling
    bundle = load_model(checkpoint, say=lambda m: click.echo(m, err=True))
    sampling_overrides(bundle, num_iter=num_iter, cfg=cfg, temperature=temperature)
    try:
        sampler = select_sampler(bundle, speculative, draft_len=draft_len, tau0=tau0, kappa=kappa)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    num_classes = bundle.config.class_num
    if any(not 0 <= c < num_classes for c in cls):
        raise click.BadParameter(f"classes must be in 0..{num_classes - 1}, got {list(cls)}", param_hint="--class")
    if per_class is not None:
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        nrow = per_class
    else:
        pool = torch.tensor(cls) if cls else torch.arange(num_classes)
        labels = pool[torch.arange(num) % len(pool)]
        nrow = 8 if not cls else max(1, min(num, 8))
    g = torch.Generator().manual_seed(seed)
    images, counts, extras = [], None, []
    for chunk in labels.split(batch_size):
        res = sampler(bundle, chunk.to(bundle.device), num_iter=num_iter, cfg=cfg, temperature=temperature, generator=g)
        images.append(res.images.cpu())
        counts = res.counts
        extras.append(res.counts.extra)
    imgs = torch.cat(images)
    bad = int((~torch.isfinite(imgs)).flatten(1).any(1).sum())           # images with a NaN / inf pixel
    if bad:
        raise NonFiniteError(f"sampling produced NaN or inf pixels in {bad} "
                             f"of {len(imgs)} images; nothing was written to {out}. The model or a sampling setting "
                             "is broken (try the model's defaults, or an earlier checkpoint)")
    if suffix == ".npz":
        np.savez_compressed(out, images=to_uint8(imgs), labels=labels.numpy().astype(np.int64))
    else:
        save_grid(imgs, out, rows=-(-len(imgs) // nrow), cols=nrow)
    c = counts.as_dict()
    click.echo(f"wrote {len(imgs)} images to {out}; per image: backbone passes {c['backbone_passes']}, "
               f"head NFE {c['head_nfe']}, draft passes {c['draft_passes']}, sequential NFE {c['nfe']}")
    if "acceptance_rate" in c:
        drafted = sum(e["drafted"] for e in extras)
        accepted = sum(e["accepted"] for e in extras)
        rounds = sum(e["rounds"] for e in extras)
        click.echo(f"speculative decoding: acceptance {accepted / max(drafted, 1):.3f}, mean accepted length "
                   f"{accepted / max(rounds, 1):.2f}, {rounds / len(extras):.1f} target passes per batch "
                   "(--no-speculative for plain decoding)")
