"""Which training objective a recipe runs: ``RunConfig.recipe`` -> ``factory(run_config, bundle)``.

One explicit table instead of objectives registering themselves into a global dict on import: the
baseline objective (train/objective.py), Drift-AR's (method/objective.py, Eq. 9-10) and the window
draft's distillation (method/window_draft_train.py). ``extra`` lets a caller (a test, a plugin's own
loop) run another objective under a new recipe name without touching this table.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from driftar_core.config import ConfigError
from driftar_core.method.objective import DriftARObjective
from driftar_core.method.window_draft_train import WindowDraftObjective
from driftar_core.train.objective import BaselineObjective, ObjectiveFactory, TrainObjective

OBJECTIVES: dict[str, ObjectiveFactory] = {
    "baseline": BaselineObjective.from_config,       # the backbone's own head loss (+ aux loss)
    "drift": DriftARObjective.from_config,           # Drift-AR: drift decoder + draft, two-phase schedule
    "draft": WindowDraftObjective.from_config,       # distil the window draft from the model's own samples
}


def make_objective(run_config: Any, bundle: nn.Module, extra: dict[str, ObjectiveFactory] | None = None
                   ) -> TrainObjective:
    """The objective for ``run_config.recipe``; an unknown recipe fails with the known ones."""
    table = {**OBJECTIVES, **(extra or {})}
    name = run_config.recipe
    if name not in table:
        raise ConfigError(f"unknown training recipe {name!r} (recipe=...); known: {', '.join(sorted(table))}")
    return table[name](run_config, bundle)
