"""One run per folder: a lock file holding the owner's pid and host.

Two trainings writing into one folder mix their CSV rows and checkpoints; the second is
refused instead. A lock left by a process that no longer exists on this host is stale and
taken over; one from another host cannot be checked, so the message says how to clear it.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

from visionlab.utils.errors import ConfigError

log = logging.getLogger("visionlab")
LOCK_FILE = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Hold `folder/.lock` while a run writes there; re-entrant within one process."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self.owned = False

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": platform.node(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner() or {}
                if owner.get("pid") == me["pid"] and owner.get("host") == me["host"]:
                    return self  # this process already holds it (the CLI took it before Hydra started)
                if owner.get("host") == me["host"] and isinstance(owner.get("pid"), int) and not _alive(owner["pid"]):
                    log.warning("%s: taking over a stale lock of pid %s, which no longer runs", self.path, owner["pid"])
                    self.path.unlink(missing_ok=True)
                    continue
                who = (
                    f"pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('started')}"
                    if owner
                    else "another run"
                )
                raise ConfigError(
                    f"{self.path.parent} is in use by {who}; wait for it, choose another "
                    f"hydra.run.dir, or delete {self.path} if that run is gone"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.owned = True
            return self
        raise ConfigError(f"{self.path}: could not take the run lock")

    def release(self) -> None:
        if self.owned:
            self.path.unlink(missing_ok=True)
            self.owned = False
