"""Eq. 9-10 two-phase schedule (method/schedule.py)."""
from __future__ import annotations

import pytest

from driftar_core.config import ConfigError, validate
from driftar_core.method.schedule import TwoPhaseSchedule


def test_alpha_values_and_phases():
    s = TwoPhaseSchedule(total=1000)                      # alpha0 0.95, T_freeze 800
    assert s.t_freeze == pytest.approx(800)
    assert s.alpha(0) == pytest.approx(0.95)
    assert s.alpha(400) == pytest.approx(0.475)
    assert s.alpha(799) == pytest.approx(0.95 / 800)
    assert s.alpha(800) == 0.0 and s.alpha(1000) == 0.0
    assert s.drift_weight(0) == pytest.approx(0.05) and s.drift_weight(900) == 1.0
    assert s.phase(0) == "I" and s.phase(799.9) == "I"
    assert s.phase(800) == "II" and s.phase(999) == "II"  # Phase II starts where alpha hits 0 (B4 fixed)


def test_schedule_config_is_strict():
    with pytest.raises(ConfigError, match="alpha_0"):
        validate(TwoPhaseSchedule, {"total": 10, "alpha_0": 0.9})
    with pytest.raises(ConfigError):
        validate(TwoPhaseSchedule, {"total": 10, "alpha0": 1.5})
