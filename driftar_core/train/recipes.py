"""Which training objective a run executes: its recipe's declared ``objective`` -> ``factory(run_config, bundle)``.

Objectives are registered objects (``driftar_register_objectives``): the core's plugin registers
``baseline`` (train/objective.py), ``drift`` (Drift-AR, method/objective.py, Eq. 9-10) and ``draft``
(the window draft's distillation, method/window_draft_train.py); a plugin adds its own and names it in
its recipe (``register(..., objective="mine")``). A run whose recipe is not registered (a ``--config``
file of its own) runs the objective of the recipe's name. ``extra`` lets a caller (a test) add one.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from driftar_core.config import ConfigError
from driftar_core.plugins import registries
from driftar_core.train.objective import ObjectiveFactory, TrainObjective


def objective_name(run_config: Any) -> str:
    """The objective ``run_config`` runs: its registered recipe's ``objective``, else the recipe's name."""
    return registries().recipe_of(run_config.backbone, run_config.recipe).objective_name


def make_objective(run_config: Any, bundle: nn.Module, extra: dict[str, ObjectiveFactory] | None = None
                   ) -> TrainObjective:
    """The objective of ``run_config``'s recipe; an unknown one fails naming the registered ones."""
    objectives, name = registries().objectives, objective_name(run_config)
    if extra and name in extra:
        return extra[name](run_config, bundle)
    if name not in objectives:
        known = ", ".join(sorted({*objectives.names(), *(extra or {})}))
        raise ConfigError(f"unknown training objective {name!r} (recipe {run_config.recipe!r}); registered: {known}")
    return objectives.get(name)(run_config, bundle)
