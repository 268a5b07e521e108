"""Two-phase annealed training of Drift-AR (Eq. 9-10; docs/method.md "Two-phase training").

    L = alpha(t) * (L_reg + L_ent) + (1 - alpha(t)) * L_drift                      (Eq. 9)
    alpha(t) = alpha0 * (1 - t / T_freeze)  for t <= T_freeze,  0 afterwards,      (Eq. 10)
    T_freeze = freeze_fraction * T,  alpha0 = 0.95,  freeze_fraction = 0.8

So the drift weight ramps linearly from 1 - alpha0 = 0.05 to 1 over Phase I. Phase II (everything
but the decoder frozen, z and E detached, L_drift only) starts where alpha reaches 0, i.e. at
t >= T_freeze. The official code starts it one epoch later (a strict ``>``, defect B4 in docs/method.md), which
leaves one epoch with alpha = 0 and nothing frozen; here the phase boundary and alpha = 0 coincide.

t and T are in the trainer's unit (the official code uses integer epochs; driftar's trainer uses
optimizer steps). Which modules freeze in Phase II is the trainer's business (docs/method.md "Two-phase training").
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from driftar_core.config import Strict

Phase = Literal["I", "II"]


class TwoPhaseSchedule(Strict):
    """alpha(t) of Eq. 10 over a run of ``total`` units (steps or epochs)."""

    total: float = Field(gt=0)                        # T
    alpha0: float = Field(0.95, ge=0, le=1)           # official default (docs/method.md "Official defaults")
    freeze_fraction: float = Field(0.8, gt=0, le=1)   # T_freeze / T, official default

    @property
    def t_freeze(self) -> float:
        return self.freeze_fraction * self.total

    def alpha(self, t: float) -> float:
        """Eq. 10: the weight of the AR losses (L_reg + L_ent) at t."""
        if t >= self.t_freeze:
            return 0.0
        return self.alpha0 * (1.0 - max(t, 0.0) / self.t_freeze)

    def drift_weight(self, t: float) -> float:
        """1 - alpha(t): the weight of L_drift (0.05 at t = 0 with the defaults, 1 in Phase II)."""
        return 1.0 - self.alpha(t)

    def phase(self, t: float) -> Phase:
        """"I" while the AR losses are on (t < T_freeze), "II" from T_freeze on (frozen encoder)."""
        return "II" if t >= self.t_freeze else "I"
