"""Outcome classes of an attempt and the one function that assigns them (pure, no I/O)."""
from __future__ import annotations

import re
from typing import Iterable

OK = "ok"
CLEAR = "clear error"
UNCLEAR = "unclear error"
TRACEBACK = "traceback"
SILENT = "silent wrong result"
DATA_LOSS = "data loss"
LEFTOVER = "leftover files"
HANG = "hang"

# report order; every class but ``ok`` and ``clear error`` is a defect
CLASSES = (OK, CLEAR, UNCLEAR, TRACEBACK, SILENT, DATA_LOSS, LEFTOVER, HANG)
DEFECTS = (UNCLEAR, TRACEBACK, SILENT, DATA_LOSS, LEFTOVER, HANG)

TRACEBACK_MARK = "Traceback (most recent call last)"
MAX_MESSAGE_LINES = 12        # "one-line-ish": click's usage error is 4 lines, a ConfigError lists its keys

# stderr lines that are not the command's message: torch/absl log lines, Python warnings
_NOISE = re.compile(r"^(?:[WIEF]\d{4} \d\d:\d\d:\d\d\.\d+ |.*\b\w*Warning: |\s+warnings\.warn\(|\s*\d+%\|)")


def message_lines(stderr: str) -> list[str]:
    """The non-empty lines of ``stderr`` that are not log or warning noise."""
    return [line for line in stderr.splitlines() if line.strip() and not _NOISE.match(line)]


def first_line(stderr: str) -> str:
    lines = message_lines(stderr)
    if TRACEBACK_MARK in stderr:             # the exception line says more than the first frame
        tail = [line for line in lines if not line.startswith((" ", TRACEBACK_MARK))]
        return tail[-1] if tail else lines[0]
    errors = [line for line in lines if line.lstrip().startswith("Error")]
    return errors[0] if errors else lines[0] if lines else ""


def is_clear_message(stderr: str) -> bool:
    """A short message with a line that starts with 'Error' or 'Usage' (click's forms); progress lines
    before it ("loading RUN/model: ...") are allowed."""
    lines = message_lines(stderr)
    return any(line.lstrip().startswith(("Error", "Usage")) for line in lines) and len(lines) <= MAX_MESSAGE_LINES


def classify(exit_code: int | None, stderr: str, expect: str, *, timed_out: bool = False,
             has_oracle: bool = False, oracle_failure: str | None = None, lost: Iterable[str] = (),
             leftovers: Iterable[str] = ()) -> str:
    """The outcome class of one attempt.

    ``exit_code``: the command's status (negative: killed by that signal; None: never finished);
    ``expect``: ``"error"`` (bad input: the command must refuse it) or ``"ok"`` (valid input: it must
    succeed); ``has_oracle``: the case checks the result of an exit-0 run; ``oracle_failure``: why that
    check rejected it (None: accepted, or not run); ``lost``: sentinel files gone or changed; ``leftovers``:
    temporaries / partial outputs still there after the attempt AND the next normal start.

    First match wins (most severe first):

    1. ``timed_out``                                    -> ``hang``
    2. a file the user had is gone or changed           -> ``data loss``
    3. exit != 0 and stderr has a Python traceback      -> ``traceback``
       (also a death by signal: exit < 0)
    4. exit == 0 and the oracle rejected the result     -> ``silent wrong result``
       exit == 0, ``expect == "error"`` and no oracle   -> ``silent wrong result``
       (an oracle that accepts the output makes an odd-but-valid value ``ok``: e.g. ``--cfg 0``)
    5. leftovers                                        -> ``leftover files``
    6. exit != 0, message not 'Error...'/'Usage...' or too long -> ``unclear error``
    7. exit != 0 with a clear message                   -> ``clear error`` (for ``expect="ok"`` that is
       a valid input refused: the report marks it)
    8. otherwise                                        -> ``ok``
    """
    if timed_out:
        return HANG
    if list(lost):
        return DATA_LOSS
    failed = exit_code is None or exit_code != 0
    if failed and (TRACEBACK_MARK in stderr or (exit_code is not None and exit_code < 0)):
        return TRACEBACK
    if not failed:
        if oracle_failure is not None or (expect == "error" and not has_oracle):
            return SILENT
    if list(leftovers):
        return LEFTOVER
    if failed:
        return CLEAR if is_clear_message(stderr) else UNCLEAR
    return OK

