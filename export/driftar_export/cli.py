"""``driftar run``: sample through an export bundle (ONNX Runtime or TensorRT); ``--compare`` against PyTorch.

Registered by the plugin's ``driftar_register_commands``; click only at import (``driftar --help``
stays torch-free). Every count, bound and setting is checked, and ``--out`` is checked writable, before
the bundle is loaded (the shared option types of ``driftar_core.cli.options``); the bundle's files are
verified against their hashes before a graph is loaded (``manifest.read_manifest``).
"""
from __future__ import annotations

from pathlib import Path

import click

from driftar_core.cli.options import COUNT, GUIDANCE, SEED, TEMPERATURE, TOLERANCE


@click.command("run")
@click.option("--bundle", "-b", "bundle_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="An export bundle (driftar export --target onnx|tensorrt --out DIR).")
@click.option("-n", "num", type=COUNT, default=16, show_default=True, help="Number of images.")
@click.option("--class", "cls", type=int, multiple=True, help="Class label(s); default: cycle 0..K-1.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="grid.png or samples.npz.")
@click.option("--batch-size", type=COUNT, default=None,
              help="Images per call, at most the bundle's max_batch (the default).")
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt"]), default="onnxruntime", show_default=True)
@click.option("--providers", default="cpu", show_default=True,
              help="ONNX Runtime providers in priority order, comma-separated: tensorrt,cuda,cpu.")
@click.option("--threads", type=COUNT, default=None, help="ONNX Runtime intra-op threads (default: its choice).")
@click.option("--sampler", type=click.Choice(["plain", "speculative"]), default=None,
              help="Override the bundle's sampler (causal bundles with a draft can run either).")
@click.option("--num-iter", type=COUNT, default=None)
@click.option("--cfg", type=GUIDANCE, default=None)
@click.option("--temperature", type=TEMPERATURE, default=None)
@click.option("--draft-len", type=COUNT, default=None)
@click.option("--tau0", type=TOLERANCE, default=None)
@click.option("--kappa", type=TOLERANCE, default=None)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of orders and noise (as driftar sample).")
@click.option("--compare", is_flag=True, help="Also run the PyTorch sampler on the model the bundle was exported "
              "from, with the same seed, and report the largest pixel difference.")
def run(bundle_dir: str, num: int, cls: tuple[int, ...], out: str, batch_size: int | None, backend: str,
        providers: str, threads: int | None, sampler: str | None, num_iter: int | None, cfg: float | None,
        temperature: float | None, draft_len: int | None, tau0: float | None, kappa: float | None, seed: int,
        compare: bool) -> None:
    """Sample class-conditional images with an exported Drift-AR model (same seed -> PyTorch's images)."""
    import time

    import numpy as np
    import torch

    from driftar_core.files import check_writable_file
    from driftar_core.viz import save_grid, to_uint8
    from driftar_export.runtime.runner import Runner

    suffix = Path(out).suffix.lower()
    if suffix not in (".png", ".npz"):
        raise click.BadParameter(f"--out must end in .png or .npz, got {out!r}", param_hint="--out")
    try:
        check_writable_file(out, "--out")                     # before any work, not after sampling
    except OSError as e:
        raise click.ClickException(str(e)) from None
    if threads:
        torch.set_num_threads(threads)                        # the --compare side runs PyTorch
    try:
        runner = Runner(bundle_dir, backend=backend, providers=tuple(p.strip() for p in providers.split(",")),
                        threads=threads)
        overrides = {"sampler": sampler, "num_iter": num_iter, "cfg": cfg, "temperature": temperature,
                     "draft_len": draft_len, "tau0": tau0, "kappa": kappa}
        settings = runner.resolve(dict(overrides))
    except (ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    classes = runner.model["class_num"]
    if any(not 0 <= c < classes for c in cls):
        raise click.BadParameter(f"classes must be in 0..{classes - 1}, got {list(cls)}", param_hint="--class")
    if batch_size is not None and batch_size > runner.max_batch:
        bound = runner.max_batch
        raise click.UsageError(f"--batch-size {batch_size} exceeds the bundle's bound max_batch={bound} (its graphs' "
                               f"largest batch); use --batch-size {bound} or less, or re-export with "
                               f"--set max_batch={batch_size}")
    pool = torch.tensor(cls) if cls else torch.arange(classes)
    labels = pool[torch.arange(num) % len(pool)]
    chunks = labels.split(batch_size or runner.max_batch)

    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    try:
        results = [runner.sample(y, generator=g, **overrides) for y in chunks]
    except ValueError as e:                                  # NonFiniteError and ConfigError included
        raise click.ClickException(str(e)) from None
    seconds = time.perf_counter() - t0
    images = torch.cat([r.images for r in results])
    if suffix == ".npz":
        np.savez_compressed(out, images=to_uint8(images), labels=labels.numpy().astype(np.int64))
    else:
        cols = 8 if not cls else max(1, min(num, 8))
        save_grid(images, out, rows=-(-len(images) // cols), cols=cols)
    c = results[-1].counts.as_dict()
    where = backend if backend == "tensorrt" else f"onnxruntime {runner.graphs.providers[0]}"
    kind = settings["kind"] + (f" up to batch {settings['speculate_up_to']}, plain above"
                               if settings.get("speculate_up_to") else "")
    click.echo(f"wrote {len(images)} images to {out} in {seconds:.2f} s ({where}, sampler: {kind}); "
               f"per image: target passes {c['backbone_passes']}, head NFE {c['head_nfe']}, draft passes "
               f"{c['draft_passes']}" + (f", acceptance {c['acceptance_rate']:.2f}" if "acceptance_rate" in c else ""))
    if compare:
        _compare(runner, settings, chunks, seed, images)


def _compare(runner: object, settings: dict, chunks: tuple, seed: int, images: object) -> None:
    import torch

    from driftar_core.resolve import load_model
    from driftar_export.sampler import torch_sampler
    ref = runner.model.get("ref")
    if not ref:
        raise click.ClickException("the bundle does not record the model it was exported from; cannot --compare")
    from driftar_export.exporter import weights_digest
    try:
        bundle = load_model(ref)
    except Exception as e:
        raise click.ClickException(f"cannot load {ref!r} (the model the bundle was exported from) to compare: {e}")
    if weights_digest(bundle) != runner.model.get("weights_sha256"):
        raise click.ClickException(f"{ref!r} now loads other weights than the bundle was exported from (an untrained "
                                   "architecture name draws new random weights; a run directory may have moved on); "
                                   "export from a saved model or a zoo name to --compare")
    sample = torch_sampler(settings)
    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        ref_images = torch.cat([sample(bundle, y, generator=g).images for y in chunks])
    diff = float((images.double() - ref_images.double()).abs().max())
    levels = int((((images.clamp(-1, 1) + 1) * 127.5).round() - ((ref_images.clamp(-1, 1) + 1) * 127.5).round()).abs().max())
    click.echo(f"PyTorch ({ref}, same seed): max |pixel difference| {diff:.3g} (images in [-1, 1]), "
               f"{levels} of 255 grey levels")
