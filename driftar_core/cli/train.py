"""``driftar train``: resolve a recipe + overrides into a validated RunConfig, then run the trainer."""
from __future__ import annotations

import json

import click

from driftar_core.cli.options import set_option


def resolve_recipe(backbone: str, recipe: str | None) -> tuple[str, object]:
    """The recipe spec; without ``--recipe`` the one the backbone declared its default (``default=True``)."""
    from driftar_core.plugins import registries
    reg = registries()
    reg.backbones.get(backbone)  # unknown backbone -> "did you mean"
    if recipe is None:
        recipe = reg.default_recipe(backbone).name
    return recipe, reg.recipes.get(f"{backbone}/{recipe}")


def resolve_configs(backbone: str, recipe: str | None, config_file: str | None, overrides: tuple[str, ...]):
    """(RunConfig, resolved model config); every error is raised here, before any work starts."""
    from driftar_core.config import ConfigError, build_run_config
    from driftar_core.plugins import registries
    from driftar_core.registry import resolve_model_config
    recipe, spec = resolve_recipe(backbone, recipe)
    cfg = build_run_config(spec.path, config_file, overrides, backbone=backbone, recipe=recipe)
    reg = registries()
    arch = reg.models.get(cfg.model.arch)
    if arch.backbone != cfg.backbone:
        raise ConfigError(f"model.arch {cfg.model.arch!r} is a {arch.backbone!r} model but backbone is "
                          f"{cfg.backbone!r}; pick one of: {', '.join(reg.models.names(cfg.backbone + '_*'))}")
    model_cfg = resolve_model_config(reg.backbones.get(arch.backbone), arch.preset, cfg.model.args)
    if cfg.data.dataset not in reg.datasets:
        reg.datasets.get(cfg.data.dataset)  # raises with close matches
    check_grid_classes(cfg, model_cfg)
    return cfg, model_cfg


def check_grid_classes(cfg, model_cfg) -> None:
    """train.grid_classes are labels the model has (else the run would fail at its first sample grid)."""
    from driftar_core.config import ConfigError
    classes = model_cfg.class_num                     # every model config declares it (docs/plugins.md)
    bad = [c for c in cfg.train.grid_classes if c >= classes]
    if bad:
        raise ConfigError(f"train.grid_classes {bad} are not classes of this model (0..{classes - 1})")


def resume_configs(backbone: str, recipe: str | None, config_file: str | None, overrides: tuple[str, ...],
                   resume: str):
    """(RunConfig, model config, step directory) of ``--resume``: the run's SAVED resolved config, then
    ``--config`` and ``--set`` on top (explicit, validated, and printed)."""
    from driftar_core.bundle import CheckpointError
    from driftar_core.config import RunConfig, deep_update, load_config_file, parse_overrides, validate
    from driftar_core.files import read_json_object
    from driftar_core.plugins import registries
    from driftar_core.registry import resolve_model_config
    from driftar_core.train.checkpoint import resolve_resume
    probe, _ = resolve_configs(backbone, recipe, None, overrides)    # runs_dir / name for 'latest'
    step_dir = resolve_resume(resume, probe.train.runs_dir, probe.backbone, probe.train.name)
    saved_path = step_dir.parent.parent / "config.json"
    saved = read_json_object(saved_path, CheckpointError, "cannot resume without the run's resolved config")
    data = deep_update(saved, load_config_file(config_file)) if config_file else saved
    data = deep_update(data, parse_overrides(overrides))
    cfg = validate(RunConfig, data)
    arch = registries().models.get(cfg.model.arch)
    model_cfg = resolve_model_config(registries().backbones.get(arch.backbone), arch.preset, cfg.model.args)
    check_grid_classes(cfg, model_cfg)
    changes = [f"{o}" for o in overrides] + ([f"--config {config_file}"] if config_file else [])
    click.echo(f"resume: {step_dir} with the run's saved config {saved_path}"
               + (f", overridden by {' '.join(changes)}" if changes else ""))
    return cfg, model_cfg, step_dir


@click.command("train")
@click.option("--backbone", default="mar", show_default=True, help="Backbone plugin (driftar plugins lists them).")
@click.option("--recipe", default=None, help="Recipe name (driftar plugins lists them); default: the one the backbone declares.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="TOML/JSON run config.")
@set_option
@click.option("--resume", default=None, help="'latest' or a run/checkpoint directory to continue from.")
@click.option("--print-config", is_flag=True, help="Print the resolved configuration and exit.")
def train(backbone: str, recipe: str | None, config_file: str | None, overrides: tuple[str, ...],
          resume: str | None, print_config: bool) -> None:
    """Train a model on the bundled digits (or data.dataset=imagefolder data.root=DIR)."""
    from driftar_core.files import check_writable_dir
    main, _ = resolve_recipe(backbone, recipe)
    own = stage_overrides(overrides, main, main)
    if resume is not None:
        cfg, model_cfg, step_dir = resume_configs(backbone, recipe, config_file, own, resume)
        resume = str(step_dir)
    else:
        cfg, model_cfg = resolve_configs(backbone, recipe, config_file, own)
    if print_config:
        click.echo(json.dumps({"run": cfg.model_dump(mode="json"), "model": model_cfg.model_dump(mode="json")}, indent=2))
        return
    from driftar_core.plugins import registries
    from driftar_core.train import train as run_training
    check_writable_dir(cfg.train.runs_dir, "train.runs_dir")
    recipes = registries().recipes
    spec = recipes.get(f"{cfg.backbone}/{cfg.recipe}")
    before = [] if resume is not None or cfg.model.init_from is not None else earlier_stages(recipes, spec)
    after = [] if resume is not None else later_stages(recipes, spec, model_cfg)
    total, stage = len(before) + 1 + len(after), 1
    prev = None
    for name in before:                              # e.g. the baseline Drift-AR starts from
        stage_cfg, _ = resolve_configs(backbone, name, None, stage_overrides(overrides, name, cfg.recipe)
                                       + ((f"model.init_from={prev}",) if prev else ()))
        click.echo(f"[{stage}/{total}] training the {backbone} {name} recipe (reuse a trained one with "
                   f"--set model.init_from=RUN_DIR|ZOO_NAME)")
        prev, stage = run_training(stage_cfg), stage + 1
        click.echo(f"{name} run directory: {prev}")
    if prev is not None:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"init_from": str(prev)})})
        click.echo(f"[{stage}/{total}] {cfg.recipe} from {prev}")
    run_dir = run_training(cfg, resume=resume)
    click.echo(f"run directory: {run_dir}")
    for name in after:                               # e.g. the window draft distilled from the Drift-AR model
        stage += 1
        stage_cfg, _ = resolve_configs(backbone, name, None, stage_overrides(overrides, name, cfg.recipe)
                                       + (f"model.init_from={run_dir}",))
        click.echo(f"[{stage}/{total}] {name} from {run_dir} (driftar train --recipe {name})")
        run_dir = run_training(stage_cfg)
        click.echo(f"run directory: {run_dir}")


def earlier_stages(recipes, spec) -> list[str]:
    """The recipes to train before ``spec`` (its ``after`` chain), first first."""
    chain, seen = [], {spec.name}
    while spec.after is not None:
        if spec.after in seen:
            raise click.ClickException(f"the recipes of {spec.backbone} name each other in a loop: {sorted(seen)}")
        seen.add(spec.after)
        spec = recipes.get(f"{spec.backbone}/{spec.after}")
        chain.insert(0, spec.name)
    return chain


def later_stages(recipes, spec, model_cfg) -> list[str]:
    """The recipes to train after ``spec`` (its ``then`` chain) that apply to the model."""
    chain = []
    while spec.then is not None and spec.then not in chain:
        spec = recipes.get(f"{spec.backbone}/{spec.then}")
        if spec.applies is not None and not spec.applies(model_cfg):
            break
        chain.append(spec.name)
    return chain


# keys that name what ONE stage is or starts from: an unprefixed --set of them reaches the requested recipe only
STAGE_OWN = ("model.arch=", "model.init_from=", "method.", "recipe=", "backbone=")


def stage_overrides(overrides: tuple[str, ...], stage: str, main: str) -> tuple[str, ...]:
    """The ``--set`` items for one stage of a multi-stage ``driftar train``.

    ``KEY=VALUE`` reaches every stage (baseline, drift, draft), except the stage-own keys
    (``model.arch``, ``model.init_from``, ``method.*``), which reach the requested recipe ``main`` only;
    ``STAGE:KEY=VALUE`` reaches that stage only, e.g. ``--set baseline:train.steps=500``.
    """
    out = []
    for item in overrides:
        prefix, sep, rest = item.partition(":")
        if sep and "=" not in prefix:                 # STAGE:KEY=VALUE
            if prefix == stage:
                out.append(rest)
        elif stage == main or not item.startswith(STAGE_OWN):
            out.append(item)
    return tuple(out)
