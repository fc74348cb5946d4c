"""torch's CPU threads and how they wait: chosen so that a run on a busy machine slows
down in proportion instead of collapsing, and reported in the log.

OpenMP threads spin while they wait for each other (GNU OpenMP: about 300k spins). With
another process on the same cores, the spinning threads fight it and each other: on a
busy 2-core machine 1500 steps of the notes' MLP took 56-81 s with torch's two threads,
5.5-7.8 s with OMP_WAIT_POLICY=PASSIVE and 4 s with one thread (issue #26). So
`import visionlab` sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP (a value the
user set wins), and the thread count stays torch's own (one per core): a count that
followed the machine's load would change float rounding between runs of one seed.
`threads=N` or OMP_NUM_THREADS choose the count.
"""

from __future__ import annotations

import os

import torch

OPENMP_DEFAULT = "ACTIVE (OpenMP's spin; torch was loaded before visionlab)"


def wait_policy() -> str:
    """The OpenMP wait policy in force (read by OpenMP when torch was loaded)."""
    return os.environ.get("OMP_WAIT_POLICY", OPENMP_DEFAULT)


def choose_threads(requested: int | None = None) -> tuple[int, str]:
    """Set torch's intra-op threads to `requested` (the `threads` key) when given; say
    what is in force and why: (threads, description for the log)."""
    if requested is not None:
        torch.set_num_threads(requested)
        source = f"threads={requested}"
    elif os.environ.get("OMP_NUM_THREADS"):
        source = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    else:
        source = "torch's default, one per core; threads=N to change"
    threads = torch.get_num_threads()
    return threads, f"{source}; OpenMP wait policy {wait_policy()}, OMP_WAIT_POLICY to change"
