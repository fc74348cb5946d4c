"""No host synchronisation in a steady-state training step (issue #26, item 2).

On a GPU every `.item()`, `bool(tensor)`, `.tolist()`, `.cpu()` or data-dependent shape
(`nonzero`, `unique`, boolean masks) makes the host wait for the device before it can queue
the next step. On the CPU nothing waits, so these tests count the calls that would: Python
methods patched on Tensor, and the aten ops that read a value back, seen by a dispatch mode.
`tests/test_gpu.py` checks the same steps with `torch.cuda.set_sync_debug_mode("error")`.
"""

from __future__ import annotations

import traceback
from collections import Counter
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from visionlab.app.assemble import build
from visionlab.training.trainer_state import callbacks_of

# aten ops whose result the host must read back (values or a data-dependent shape)
SYNCING_OPS = {
    "_local_scalar_dense",
    "nonzero",
    "masked_select",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "is_nonzero",
    "equal",
    "allclose",
}
# Tensor methods that copy to the host (on the CPU they return at once, so they are patched)
SYNCING_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
FIRST, STEPS = 3, 20  # steady state: after warm-up batches, 20 whole steps


class SyncCounter(TorchDispatchMode):
    """Counts, with the place each was called from, the calls that would synchronise."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.armed = False

    def _record(self, name: str) -> None:
        if not self.armed:
            return
        stack = [f for f in traceback.extract_stack() if f.filename != __file__]
        if "/torch/optim/" in stack[-1].filename:
            return  # torch.optim's step counts live on the host (unless capturable): reading them is free
        frame = next((f for f in reversed(stack) if "/torch/" not in f.filename), None)
        self.calls[f"{name} at {frame.filename}:{frame.lineno}" if frame else name] += 1

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if name in SYNCING_OPS or (
            name == "index"
            and any(  # a boolean mask: its count sizes the result
                i is not None and i.dtype == torch.bool for i in args[1]
            )
        ):
            self._record(name)
        return func(*args, **(kwargs or {}))


class ArmSteps(L.Callback):
    """Arms the counter for whole training steps FIRST .. FIRST + STEPS - 1 (the first
    callback: from one batch start to the batch start STEPS later)."""

    def __init__(self, counter: SyncCounter) -> None:
        self.counter, self.steps = counter, 0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == FIRST:
            self.counter.armed = True
        elif batch_idx == FIRST + STEPS:
            self.counter.armed = False
        self.steps += self.counter.armed


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> SyncCounter:
    counter = SyncCounter()
    for name in SYNCING_METHODS:
        original = getattr(torch.Tensor, name)

        def patched(self: torch.Tensor, *args: Any, _name: str = name, _original: Any = original) -> Any:
            counter._record(_name)
            armed, counter.armed = counter.armed, False  # one record per call: item() calls _local_scalar_dense
            try:
                return _original(self, *args)
            finally:
                counter.armed = armed

        monkeypatch.setattr(torch.Tensor, name, patched)
    return counter


@pytest.mark.parametrize(
    "overrides",
    [
        (),  # the default config: CNN, Adam, one-cycle, default callbacks, TensorBoard and CSV
        (
            "model=mlp",
            "model.dropout=0.2",
            "optimizer=sgd",
            "scheduler=plateau",
            "task.l2=1e-4",
            "data.augment.rotation=10",
            "data.augment.horizontal_flip=true",
            "data.augment.mixup=0.2",
        ),
        ("model=mlp", "data.loader=dataloader", "data.augment.crop_padding=2"),
    ],
    ids=["default", "mlp_augmented_mixup", "dataloader"],
)
def test_steady_state_training_steps_never_wait_for_the_device(counting, overrides, cfg_factory):
    cfg = cfg_factory(
        *overrides,
        "callbacks=default",
        "logger=many",
        "trainer.enable_checkpointing=true",
        "trainer.enable_progress_bar=true",
        "trainer.enable_model_summary=true",
        f"trainer.limit_train_batches={FIRST + STEPS + 2}",
        "trainer.log_every_n_steps=1000",
        "data.batch_size=8",
        "data.train_size=400",
        "data.val_size=32",
        "data.test_size=32",
    )
    datamodule, task, trainer = build(cfg)
    arm = ArmSteps(counting)
    callbacks_of(trainer).insert(0, arm)
    with counting:
        trainer.fit(task, datamodule=datamodule)
    assert arm.steps == STEPS
    assert not counting.calls, f"host syncs in {STEPS} steady-state steps: {dict(counting.calls)}"


def test_the_counter_sees_the_syncs_it_is_meant_to_find(counting):
    x = torch.ones(3)
    counting.armed = True
    with counting:
        x.sum().item(), bool(x.sum()), x.tolist(), x[x > 0], float(x.sum()), x.cpu(), torch.isfinite(x).all().item()
    counting.armed = False
    assert sum(counting.calls.values()) == 7, counting.calls
