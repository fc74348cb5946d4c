"""What Lightning pays on every hook call, made cheaper without changing what it does.

For each hook of each step Lightning calls every callback inside
`trainer.profiler.profile(f"[Callback]{callback.state_key}.{hook}")`: a generator context
manager and a state key (ModelCheckpoint and EarlyStopping build theirs from a repr of their
arguments). With visionlab's 15 default callbacks and six hooks a step that was most of what
its step cost above Lightning's floor on a CPU (BENCHMARKS.md). Lightning's default profiler
profiles nothing; `NoProfiler` does the same nothing with one shared context, and
`CachedStateKey` builds a callback's key once (its arguments do not change after __init__).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from lightning.pytorch.profilers import PassThroughProfiler

_NOTHING = nullcontext()


class NoProfiler(PassThroughProfiler):
    """Lightning's default PassThroughProfiler, minus its per-call generator."""

    def profile(self, action_name: str) -> AbstractContextManager[Any]:  # type: ignore[override]
        return _NOTHING


class CachedStateKey:
    """Mixin for a Lightning Callback: `state_key` computed on first use, then kept."""

    @property
    def state_key(self) -> str:
        key = self.__dict__.get("_cached_state_key")
        if key is None:
            key = self.__dict__["_cached_state_key"] = super().state_key  # type: ignore[misc]
        return key
