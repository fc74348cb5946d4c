"""Seeds derived from the run's seed, so each random stream (shuffling, augmentation,
dropout) depends only on (seed, position) and never on how the run was chunked or resumed."""

from __future__ import annotations


def derive_seed(seed: int, position: int, salt: int = 0) -> int:
    """A 63-bit seed for stream `salt` at `position` (an epoch or a step) of run `seed`."""
    return (seed * 1_000_003 + position * 7_919 + salt * 104_729) % (2**63 - 1)
