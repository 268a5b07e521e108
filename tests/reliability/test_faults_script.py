"""The fault sweep's classifier (benchmarks/faults/classify.py): a pure function, no subprocesses."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from faults.classify import (CLEAR, DATA_LOSS, HANG, LEFTOVER, OK, SILENT, TRACEBACK,  # noqa: E402
                             UNCLEAR, classify, first_line)

TB = """Traceback (most recent call last):
  File "x.py", line 1, in <module>
ValueError: boom
"""
USAGE = """Usage: driftar sample [OPTIONS]
Try 'driftar sample --help' for help.

Error: Invalid value for '-n': 0 is not in the range x>=1.
"""


def test_exit_code_and_stderr_shape():
    assert classify(2, USAGE, "error") == CLEAR
    assert classify(2, "Error: unknown pretrained model 'nope.x'\n", "error") == CLEAR
    # log noise before the message does not make it unclear
    assert classify(2, "W1202 03:05:30.719000 4845 torch/x.py:107] skipping\nError: bad\n", "error") == CLEAR
    assert classify(1, TB, "error") == TRACEBACK
    assert classify(-9, "", "error") == TRACEBACK            # death by signal
    assert classify(1, "RuntimeError: boom\n", "error") == UNCLEAR
    assert classify(1, "", "error") == UNCLEAR
    assert classify(1, "Error: x\n" + "detail\n" * 20, "error") == UNCLEAR   # not one-line-ish
    assert classify(2, "Error: refused\n", "ok") == CLEAR                   # a valid input refused (reported)
    assert first_line(TB) == "ValueError: boom"
    assert classify(2, "loading runs/x/model: the final model\nError: bad weights\n", "error") == CLEAR


def test_exit_zero_uses_expectation_and_oracle():
    assert classify(0, "", "ok") == OK
    assert classify(0, "", "error") == SILENT                               # bad input accepted
    assert classify(0, "", "error", has_oracle=True) == OK                  # odd but valid: oracle accepted
    assert classify(0, "", "error", has_oracle=True, oracle_failure="constant image") == SILENT
    assert classify(0, "", "ok", has_oracle=True, oracle_failure="non-finite") == SILENT


def test_severity_order():
    assert classify(None, "", "error", timed_out=True, lost=["a"]) == HANG
    assert classify(1, TB, "error", lost=["user/notes.txt (gone)"]) == DATA_LOSS
    assert classify(1, TB, "error", leftovers=[".g.png.tmp-1-x"]) == TRACEBACK
    assert classify(2, "Error: x\n", "error", leftovers=[".g.png.tmp-1-x"]) == LEFTOVER
    assert classify(0, "", "ok", leftovers=[".B.old-12-x"]) == LEFTOVER
    assert classify(0, "", "error", leftovers=[".B.old-12-x"]) == SILENT
