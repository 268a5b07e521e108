"""``--target onnx``: a trained Drift-AR bundle -> an export bundle directory, checked end to end.

    DIR/manifest.json      roles, I/O, dims and bounds, opset, versions, parity (driftar_export.manifest)
    DIR/graphs/*.onnx      decoder, detokenize, target_step (+ target_prefill, target_verify,
                           draft_prefill, draft_step for causal backbones)
    DIR/config.json        the model config (driftar_core.bundle format), README.md (+ card.json): its card

Written into a temporary sibling directory (``.DIR.tmp-PID-*``, driftar_core.files.make_temp_dir) and
moved into place only when every graph passed its checks: a failed export leaves DIR as it was, and
the temporaries of a killed export are removed by the next one (clean_stale_temps). DIR is replaced
only when it is new, empty or a bundle holding nothing but its own files (driftar_export.destination).
The manifest records the size and sha256 of every file of the bundle (``files``).
"""
from __future__ import annotations

import inspect
import shutil
from pathlib import Path
from typing import Any, Callable

from driftar_export.manifest import (FORMAT, MANIFEST, has_draft, read_manifest, record_files, summary, versions,
                                     write_manifest)
from driftar_export.options import ExportError, OnnxOptions
from driftar_export.sampler import SPECULATIVE_KEYS, torch_sampler

SAMPLER_CHECK_ATOL = 1e-3       # images of the whole ORT loop vs PyTorch (float round-off through L steps)


# -------------------------------------------------------------------------------------------------
# What can be exported
# -------------------------------------------------------------------------------------------------


def check_supported(bundle: Any) -> Any:
    """The backbone's declared graph function (``BackboneSpec.graphs``); a clear error when it cannot export."""
    from driftar_core.method.drift_decoder import DriftDecoder
    from driftar_core.plugins import registries
    if not isinstance(bundle.head, DriftDecoder):
        head = type(bundle.head).__name__
        raise ExportError(
            f"cannot export {bundle.arch or bundle.backbone_name}: its head is {head} ({getattr(bundle.head, 'nfe', '?')} "
            "NFE per token, a sampling loop that would have to live inside the graph). driftar-export exports Drift-AR "
            "bundles, whose head is the 1-NFE DriftDecoder: export the drift variant (e.g. mar_tiny_drift.digits).")
    graphs = registries().backbones.get(bundle.backbone_name).graphs
    if graphs is None:
        raise ExportError(f"backbone {bundle.backbone_name!r} declares no export graphs (BackboneSpec.graphs: the methods "
                          "its generation calls into the network; docs/plugins.md 'Export')")
    return graphs


def sampler_settings(bundle: Any, choice: str = "default") -> dict[str, Any]:
    """The sampler the runner must reproduce, every argument resolved to a value: the bundle's declared
    default (``bundle.sampler``, a SamplerSpec) or the kind ``choice`` forces."""
    from driftar_core.interfaces import SpeculativeBackbone
    from driftar_core.method.configs import SpeculativeConfig
    from driftar_core.speculative import speculative_generate, speculative_settings
    s = bundle.config.sampling
    base = {"num_iter": s.num_iter, "cfg": s.cfg, "cfg_schedule": s.cfg_schedule, "temperature": s.temperature}
    spec = bundle.sampler
    kind = spec.kind if choice == "default" else choice
    if kind == "plain":
        return {"kind": "plain", **base}
    if bundle.draft is None:
        raise ExportError("speculative sampling needs a draft model (bundle.draft is None); use --set sampler=plain")
    if not isinstance(bundle.backbone, SpeculativeBackbone):
        raise ExportError(f"speculative sampling needs a backbone with verify / rollback (SpeculativeBackbone); "
                          f"{bundle.backbone_name!r} has none")
    speculative = spec.speculative or SpeculativeConfig()       # forced on a plain-default model: the defaults
    params = inspect.signature(speculative_generate).parameters
    kw = speculative_settings(speculative)
    out = {"kind": "speculative", **{k: v for k, v in base.items() if k != "num_iter"},
           **{k: kw.get(k, params[k].default) for k in SPECULATIVE_KEYS}}
    if choice == "default":
        out["speculate_up_to"] = speculative.max_batch       # larger batches decode plainly, as the eager default
    return out


def weights_digest(bundle: Any) -> str:
    """sha256 of the state dict (names, dtypes, shapes, bytes): ties a bundle to the exact weights it came from."""
    import hashlib

    import torch
    h = hashlib.sha256()
    for name, t in sorted(bundle.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        t = t.detach().cpu().contiguous()
        h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())   # numpy has no bfloat16
    return h.hexdigest()


# -------------------------------------------------------------------------------------------------
# The graphs: the backbone plugin's (declared) and the core components'
# -------------------------------------------------------------------------------------------------


def graph_specs(bundle: Any, options: OnnxOptions, settings: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Every graph of ``bundle``: the backbone's (``BackboneSpec.graphs``), the decoder, the detokenizer and
    a window draft; plus the bounds they were built for."""
    from driftar_core.graphs import ExportBounds
    from driftar_core.interfaces import FeatureDraft
    from driftar_export.graphs.common import decoder_spec, detokenize_spec, window_draft_spec
    backbone_graphs = check_supported(bundle)
    draft = bundle.draft
    k = None
    if draft is not None:
        declared = bundle.sampler.speculative
        k = options.max_draft_len or settings.get("draft_len") or (declared.draft_len if declared else None) or 4
        if settings["kind"] == "speculative" and settings["draft_len"] > k:
            raise ExportError(f"max_draft_len {k} is below the sampler's draft_len {settings['draft_len']}")
    bounds = ExportBounds(max_batch=options.max_batch, max_draft_len=k, max_prompt_len=options.max_prompt_len)
    try:
        specs = list(backbone_graphs(bundle, bounds))
    except ValueError as e:
        raise ExportError(str(e)) from None
    if isinstance(draft, FeatureDraft):
        specs.append(window_draft_spec(bundle, options.max_batch))
    L = bundle.tokenizer.token_shape[0]
    rows = [s.head_rows for s in specs if s.head_rows is not None]
    head_rows = max(rows) if rows else bounds.max_rows * L             # undeclared: every token of every row
    specs += [decoder_spec(bundle, head_rows), detokenize_spec(bundle, options.max_batch)]
    return specs, {"max_draft_len": k}


def alias_record(record: dict[str, Any], source: str, pinned: dict[str, int]) -> dict[str, Any]:
    """A role served by another role's graph with some dims pinned (its own profile, the same file)."""
    import copy
    out = copy.deepcopy(record)
    for name, v in pinned.items():
        out["dims"][name] = {"min": v, "max": v, "example": v, "checks": [v, v]}
    out["alias_of"] = source
    out["description"] = f"{source}'s graph with {', '.join(f'{n} = {v}' for n, v in pinned.items())}"
    return out


# -------------------------------------------------------------------------------------------------
# The export
# -------------------------------------------------------------------------------------------------


def _bundle_files(tmp: Path) -> list[str]:
    """Every file the export wrote into ``tmp`` but the manifest itself (what ``files`` records)."""
    return [p.relative_to(tmp).as_posix() for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != MANIFEST]


def _card_source(ref: str | None) -> Path | None:
    """Where the exported model's card lives: its model directory, or its zoo entry (None: neither)."""
    from driftar_core.bundle import CheckpointError
    from driftar_core.plugins import registries
    from driftar_core.resolve import find_model_dir
    if not ref:
        return None
    try:
        src = find_model_dir(ref)
    except CheckpointError:
        return None
    if src is None and ref in registries().cards.names():
        return registries().cards.get(ref).directory
    return src


def _write_card(bundle: Any, tmp: Path, ref: str | None) -> None:
    """config.json, and the model's README.md / card.json (or a default card for a model from memory)."""
    import json

    from driftar_core.bundle import default_card
    from driftar_core.files import atomic_write_text
    atomic_write_text(tmp / "config.json", json.dumps(bundle.config_dict(), indent=2))
    src = _card_source(ref)
    for name in ("README.md", "card.json"):
        if src is not None and (Path(src) / name).is_file():
            shutil.copyfile(Path(src) / name, tmp / name)
    if not (tmp / "README.md").is_file():
        atomic_write_text(tmp / "README.md", default_card(bundle))


def export_onnx(bundle: Any, out_dir: str | Path, options: OnnxOptions | None = None, ref: str | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Export ``bundle`` (in eval mode, fp32) to ``out_dir``; returns the manifest. ``ref``: the name or path
    the model was loaded from (recorded, and used by ``driftar run --compare``)."""
    import torch

    from driftar_core.files import clean_stale_temps, make_temp_dir, swap_dir
    from driftar_export.destination import check_out_dir
    from driftar_export.onnx_export import export_graph, parity
    options = options or OnnxOptions()
    out = check_out_dir(out_dir)
    check_supported(bundle)
    bundle = bundle.eval()
    if any(p.dtype != torch.float32 for p in bundle.parameters()):
        raise ExportError("export fp32 weights (bundle.float()); fp16 engines come from --target tensorrt "
                          "--set precision=fp16")
    settings = sampler_settings(bundle, options.sampler)
    specs, resolved_bounds = graph_specs(bundle, options, settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out.parent)                          # what a killed export left (never a live one's)
    tmp = make_temp_dir(out)
    try:
        (tmp / "graphs").mkdir()
        graphs = {}
        for spec in specs:
            if spec.alias_of:
                continue
            path = tmp / "graphs" / f"{spec.role}.onnx"
            record = export_graph(spec, path, options.opset)
            record["file"] = f"graphs/{path.name}"
            record["parity"] = parity(spec, path, options.parity_atol, options.seed)
            graphs[spec.role] = record
            worst = max(max(p["max_abs_diff"].values()) for p in record["parity"])
            log(f"exported {spec.role:14s} parity vs PyTorch at {[p['dims'] for p in record['parity']]}: "
                f"max |diff| {worst:.2e}")
        for spec in specs:
            if spec.alias_of:
                graphs[spec.role] = alias_record(graphs[spec.alias_of], spec.alias_of, spec.pinned)
        model = {"ref": ref, "arch": bundle.arch, "backbone": bundle.backbone_name, "weights_sha256": weights_digest(bundle),
                 "token_shape": list(bundle.tokenizer.token_shape), "image_shape": list(bundle.tokenizer.image_shape),
                 "class_num": int(bundle.config.class_num)}
        resolved = {**options.model_dump(), **resolved_bounds}
        worst = {r: max(max(p["max_abs_diff"].values()) for p in g["parity"]) for r, g in graphs.items()}
        samplers = {kind: settings if kind == settings["kind"] else sampler_settings(bundle, kind)
                    for kind in (("plain", "speculative") if has_draft(graphs) else ("plain",))}
        manifest = {"format": FORMAT, "model": model, "sampler": settings, "samplers": samplers, "graphs": graphs,
                    "opset": options.opset, "precision": options.precision, "options": resolved, "versions": versions(),
                    "parity": {"atol": options.parity_atol, "max_abs_diff": worst, "passed": True}}
        _write_card(bundle, tmp, ref)
        record_files(tmp, manifest, _bundle_files(tmp))
        write_manifest(tmp, manifest)
        if options.check_sampler:
            manifest["parity"]["sampler"] = check_sampler(bundle, tmp, settings, options.check_batch, options.seed)
            write_manifest(tmp, manifest)
            s = manifest["parity"]["sampler"]
            log(f"sampler check ({settings['kind']}, batch {s['batch']}, seed {s['seed']}): ORT vs PyTorch max |pixel "
                f"diff| {s['max_abs_pixel_diff']:.2e}, pass counts equal: {s['counts_equal']}")
        check_out_dir(out)                                 # nothing foreign appeared in DIR meanwhile
        swap_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest = read_manifest(out)
    log(summary(manifest))
    return manifest


def check_sampler(bundle: Any, directory: Path, settings: dict[str, Any], batch: int, seed: int,
                  runner: Any = None) -> dict[str, Any]:
    """The whole ORT loop vs the PyTorch sampler for one seed: max |pixel| and |token| differences, counts."""
    import torch

    from driftar_export.runtime.runner import Runner
    runner = runner or Runner(directory, threads=1)
    labels = torch.arange(batch) % int(bundle.config.class_num)
    ref = torch_sampler(settings)(bundle, labels, generator=torch.Generator().manual_seed(seed))
    got = runner.sample(labels, generator=torch.Generator().manual_seed(seed))
    keys = ("backbone_passes", "head_nfe", "draft_passes", "rounds", "accepted")
    c_ref, c_got = ref.counts.as_dict(), got.counts.as_dict()
    pix = float((got.images.double() - ref.images.double()).abs().max())
    return {"batch": batch, "seed": seed, "max_abs_pixel_diff": pix,
            "max_abs_token_diff": float((got.tokens.double() - ref.tokens.double()).abs().max()),
            "counts_equal": all(c_ref.get(k) == c_got.get(k) for k in keys),
            "counts": {k: c_got.get(k) for k in keys if k in c_got}, "passed": pix <= SAMPLER_CHECK_ATOL}
