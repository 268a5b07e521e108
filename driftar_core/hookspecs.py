"""Hook specifications: the reference documentation of what a driftar plugin can contribute.

Every hook takes a ``register`` callback (simonw/llm style): the plugin calls it once per thing it
contributes. Built-in backbones (MAR, ...) are plugins that use exactly these hooks, registered
through the ``driftar`` entry-point group like any third-party distribution.

Hooks are grouped by lifecycle: components first (tokenizers, datasets, heads, backbones), then
what is built from them (models, recipes, exporters), then the command line.

Plugin modules must stay cheap to import: no ``import torch`` at module top. Register factories and
config classes; build networks only when a factory is called.
"""
from __future__ import annotations

from typing import Any, Callable

import pluggy

PROJECT = "driftar"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[..., None]


# -------------------------------------------------------------------------------------------------
# Components
# -------------------------------------------------------------------------------------------------


@hookspec
def driftar_register_tokenizers(register: Register) -> None:
    """Register tokenizers (images <-> continuous tokens).

    :param register: call ``register(name, factory)`` once per tokenizer. ``factory(**kwargs)``
        returns an object satisfying :class:`driftar_core.interfaces.Tokenizer`.

    A duplicate name raises :class:`driftar_core.registry.DuplicateNameError` unless the plugin
    passes ``replace=True``.
    """


@hookspec
def driftar_register_datasets(register: Register) -> None:
    """Register datasets.

    :param register: call ``register(name, factory)`` once per dataset. ``factory(split=..., **kwargs)``
        returns a ``torch.utils.data.Dataset`` of ``(image [C, H, W] in [-1, 1], label int)`` pairs
        with attributes ``num_classes`` and ``image_shape``.
    """


@hookspec
def driftar_register_heads(register: Register) -> None:
    """Register token heads (vision decoders), e.g. MAR's DDPM head or the Drift-AR 1-NFE decoder.

    :param register: call ``register(name, factory)``. ``factory(config, z_dim, token_dim)`` returns
        an ``nn.Module`` satisfying :class:`driftar_core.interfaces.TokenHead`.
    """


@hookspec
def driftar_register_backbones(register: Register) -> None:
    """Register AR backbones and their size presets.

    :param register: call ``register(spec)`` with a :class:`driftar_core.registry.BackboneSpec`.
        Each preset ``p`` of a spec named ``b`` becomes a model architecture ``b_p`` in the model
        registry (``mar`` + ``tiny`` -> ``mar_tiny``), built by ``spec.build(config)``.

    The spec's ``config_cls`` is a pydantic model with ``extra="forbid"``: it holds every default
    of the model (widths, depths, head, sampling defaults) and nowhere else restates them.
    """


# -------------------------------------------------------------------------------------------------
# Things built from components
# -------------------------------------------------------------------------------------------------


@hookspec
def driftar_register_models(register: Register) -> None:
    """Register pretrained model cards (``arch.tag`` names with weights, e.g. ``mar_tiny.digits``).

    :param register: call ``register(card)`` with a :class:`driftar_core.zoo.ModelCard` whose weights
        are a local file (no network). ``create_model(name, pretrained=True)`` loads them.
    """


@hookspec
def driftar_register_recipes(register: Register) -> None:
    """Register training recipes (TOML files of :class:`driftar_core.config.RunConfig` values).

    :param register: call ``register(backbone, name, path, *, after=None, loads="all", then=None,
        applies=None, objective=None, default=False)``; ``driftar train --backbone B --recipe NAME``
        resolves it, ``default=True`` makes it what ``driftar train --backbone B`` runs, ``objective``
        names the registered training objective it runs (default: the recipe's own name). ``after``: the recipe
        whose run this one starts from (trained first when ``model.init_from`` is unset); ``loads``: what
        it takes from that run (``"all"``, ``"backbone"``: then the backbone's ``DriftARSupport``
        initialises phi and the draft, ``"all_but_draft"``); ``then``: the recipe trained after it from its
        run, when that recipe's ``applies(model_config)`` is true. See
        :class:`driftar_core.registry.RecipeSpec`.
    """


@hookspec
def driftar_register_objectives(register: Register) -> None:
    """Register training objectives: ``register(name, factory)`` with ``factory(run_config, bundle) ->
    driftar_core.train.objective.TrainObjective`` (an ``nn.Module``: (images, labels) -> (loss, metrics)).
    A recipe runs the objective it names (``objective=``). The core registers ``baseline`` (the
    backbone's own head loss), ``drift`` (Drift-AR, Eq. 9-10) and ``draft`` (the window draft's
    distillation).
    """


@hookspec
def driftar_register_exporters(register: Register) -> None:
    """Register exporters (``driftar export --target NAME``).

    :param register: call ``register(name, factory)``; ``factory()`` returns a
        :class:`driftar_core.interfaces.Exporter` (subclass it): ``exporter(bundle, out_dir, ref=None,
        log=print, **options)`` exports (``ref``: the name or path the model was loaded from). Import
        heavy dependencies (onnx, tensorrt) inside it.

    ``driftar export`` calls ``preflight(**options)`` (validate the options and check the machine, e.g.
    without TensorRT) and ``check_out(out_dir)`` (raise ``ValueError`` when ``out_dir`` may not be
    written: a file, an unwritable parent, a directory holding files the exporter did not write; an
    exporter never deletes what it did not write) before the model is loaded; ``load_runner(directory,
    threads=None)`` returns a sampler over an exported directory, which ``driftar bench --models
    NAME:DIR`` times next to eager PyTorch. The base class accepts by default and has no runner.
    """


# -------------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------------


@hookspec
def driftar_register_commands(cli: Any) -> None:
    """Add click commands or groups to the ``driftar`` command line.

    :param cli: the root ``click.Group``; call ``cli.add_command(...)`` or use ``@cli.command()``.
        Keep command modules free of top-level torch imports so ``driftar --help`` stays fast.
    """
