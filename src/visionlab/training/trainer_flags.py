"""The ranges of Lightning's Trainer flags (conf/trainer, keys relative to `trainer.`),
checked before any data is read. Lightning takes some of these values and fails later (a
ZeroDivisionError at the first step for accumulate_grad_batches=0), or takes them silently
(a negative gradient_clip_val clips nothing), or trains nothing (limit_train_batches=0).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from visionlab.utils.checks import Check, integer, is_finite, is_int, non_negative, one_of

# Every value Lightning's precision plugins accept; whether one runs on this machine's
# accelerator Lightning itself says, in one line, when the Trainer is built.
PRECISIONS = (
    "64-true",
    "64",
    "32-true",
    "32",
    "16-mixed",
    "16",
    "bf16-mixed",
    "bf16",
    "16-true",
    "bf16-true",
    "transformer-engine",
    "transformer-engine-float16",
)
TIME_UNITS = ("days", "hours", "minutes", "seconds")


def _count_or_fraction(v: Any, zero: bool) -> bool:
    """Lightning's limit_* and val_check_interval: an int counts batches, a float is a share."""
    if is_int(v):
        return v >= 0 if zero else v >= 1
    return isinstance(v, float) and (v >= 0 if zero else v > 0) and v <= 1


def _max_time(v: Any) -> bool:
    if isinstance(v, str):
        return re.fullmatch(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", v) is not None and any(c in "123456789" for c in v)
    return (
        isinstance(v, Mapping)
        and bool(v)
        and all(k in TIME_UNITS for k in v)
        and all(is_finite(x) and x >= 0 for x in v.values())
        and any(x > 0 for x in v.values())
    )


def _devices(v: Any) -> bool:
    if is_int(v) or (isinstance(v, str) and v.lstrip("-").isdigit()):
        return int(v) >= 1 or int(v) == -1
    if isinstance(v, Sequence) and not isinstance(v, str):
        return len(v) > 0 and all(is_int(d) and d >= 0 for d in v)
    return v == "auto"


TRAINER_CHECKS: tuple[Check, ...] = (
    Check("max_epochs", lambda v: is_int(v) and (v >= 1 or v == -1), "an integer >= 1, -1 (no limit) or null"),
    Check("max_steps", lambda v: is_int(v) and (v >= 1 or v == -1), "an integer >= 1, or -1 (no limit)"),
    integer("min_epochs", 0, "an integer >= 0, or null"),
    integer("min_steps", 0, "an integer >= 0, or null"),
    Check("max_time", _max_time, "a duration: 'DD:HH:MM:SS' or {days,hours,minutes,seconds} with a total above 0"),
    Check(
        "limit_train_batches",
        lambda v: _count_or_fraction(v, zero=False),
        "a count of batches >= 1, a fraction in (0, 1], or null (all); a run must train",
    ),
    Check(
        "limit_val_batches",
        lambda v: _count_or_fraction(v, zero=True),
        "a count of batches >= 0, a fraction in [0, 1], or null (all); 0: no validation",
    ),
    Check(
        "limit_test_batches",
        lambda v: _count_or_fraction(v, zero=False),
        "a count of batches >= 1, a fraction in (0, 1], or null (all); test=false skips testing",
    ),
    Check(
        "val_check_interval",
        lambda v: _count_or_fraction(v, zero=False) or _max_time(v),
        "a count of training batches >= 1, a fraction of the epoch in (0, 1], or a duration 'DD:HH:MM:SS'",
    ),
    integer("check_val_every_n_epoch", 1, "an integer >= 1, or null"),
    integer("num_sanity_val_steps", -1, "an integer >= 0, or -1 (all)"),
    integer("log_every_n_steps", 0),
    integer(
        "accumulate_grad_batches",
        1,
        "an integer >= 1 (a schedule by epoch is Lightning's GradientAccumulationScheduler callback)",
    ),
    non_negative("gradient_clip_val", "a finite number >= 0 (0 or null: no clipping)"),
    one_of("gradient_clip_algorithm", ("norm", "value")),
    Check("precision", lambda v: str(v) in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    Check("devices", _devices, "an integer >= 1, -1 (all), auto, or a non-empty list of device indices"),
    Check("fast_dev_run", lambda v: isinstance(v, bool) or (is_int(v) and v >= 0), "true, false or a count >= 0"),
)
