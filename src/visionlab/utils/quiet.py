"""Known third-party noise, filtered in one place: a run's console and log are for its user.

Each row names where a message comes from and why it tells a visionlab user nothing they
can act on. Everything else passes: a new warning of a library, or one of these libraries'
warnings and errors, still shows. Every command applies it (visionlab.app.cli.hydra_entry,
and the Python API through the same commands' code); tests/test_quiet.py checks it.
"""

from __future__ import annotations

import logging
import re
import warnings

# Lightning says its INFO lines (rank_zero_info) through this logger; logging applies a
# logger's filters to the records made at that logger, so the filter goes there.
LIGHTNING = "lightning.pytorch.utilities.rank_zero"

# (logger, message pattern, why): log records dropped.
QUIET_RECORDS: tuple[tuple[str, str, str], ...] = (
    (LIGHTNING, r"💡 Tip: ", "advertisements for Lightning's cloud services (litlogger, litmodels)"),
    (
        LIGHTNING,
        r"Trainer already configured with model summary callbacks",
        "visionlab's KerasModelSummary replaces Lightning's on purpose",
    ),
)
# Loggers whose INFO lines narrate their own internals (about twenty per ONNX export); their
# warnings and errors still show.
QUIET_BELOW_WARNING: tuple[str, ...] = ("onnxscript", "onnx_ir")
# (category, message pattern, why): warnings ignored.
QUIET_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (
        FutureWarning,
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        "Lightning's own use of torch's pytree, several times a run; nothing a user can change",
    ),
)


class _DropMatching(logging.Filter):
    """Drops the records whose message matches one of `patterns`."""

    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def quiet_known_noise() -> None:
    """Filter the noise of the tables above from now on in this process (again: no effect)."""
    by_logger: dict[str, list[str]] = {}
    for name, pattern, _ in QUIET_RECORDS:
        by_logger.setdefault(name, []).append(pattern)
    for name, patterns in by_logger.items():
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _DropMatching)]:
            logger.removeFilter(old)
        logger.addFilter(_DropMatching(patterns))
    for name in QUIET_BELOW_WARNING:
        logging.getLogger(name).setLevel(logging.WARNING)
    for category, pattern, _ in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
