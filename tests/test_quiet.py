"""visionlab.utils.quiet: known third-party noise is filtered, what users need still shows."""

import logging
import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from visionlab.training.callbacks import KerasModelSummary
from visionlab.utils import quiet


@pytest.fixture
def loggers():
    """The quieted loggers' filters and levels, restored after the test."""
    names = {name for name, _, _ in quiet.QUIET_RECORDS} | set(quiet.QUIET_BELOW_WARNING)
    saved = {name: (list(logging.getLogger(name).filters), logging.getLogger(name).level) for name in names}
    for name in names:
        logging.getLogger(name).filters.clear()
        logging.getLogger(name).setLevel(logging.NOTSET)
    yield
    for name, (filters, level) in saved.items():
        logging.getLogger(name).filters[:] = filters
        logging.getLogger(name).setLevel(level)


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).sum()
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize("quieted", [False, True])
def test_a_fit_says_what_matters_and_not_the_known_noise(quieted, loggers, tmp_path):
    capture = Capture()
    lightning_log = logging.getLogger(quiet.LIGHTNING)
    lightning_log.addHandler(capture)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if quieted:
                quiet.quiet_known_noise()
            trainer = L.Trainer(
                accelerator="cpu",
                max_epochs=1,
                callbacks=[KerasModelSummary()],
                logger=CSVLogger(tmp_path),
                enable_checkpointing=False,
                enable_progress_bar=False,
                log_every_n_steps=50,
            )
            trainer.fit(Tiny(), DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2))
    finally:
        lightning_log.removeHandler(capture)
    said = "\n".join(capture.lines + [str(w.message) for w in caught])
    noise = [
        "💡 Tip: For seamless cloud logging",
        "Trainer already configured with model summary callbacks",
        "`isinstance(treespec, LeafSpec)` is deprecated",
    ]
    assert [n in said for n in noise] == [not quieted] * 3
    assert "GPU available" in said
    assert "smaller than the logging interval" in said  # a warning a user can act on still shows


def test_onnx_internals_say_only_warnings(loggers):
    quiet.quiet_known_noise()
    for name in ("onnxscript.optimizer._constant_folding", "onnx_ir.passes.common.unused_removal"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)
        assert logging.getLogger(name).isEnabledFor(logging.WARNING)


def test_quieting_twice_adds_nothing(loggers):
    quiet.quiet_known_noise()
    quiet.quiet_known_noise()
    assert len(logging.getLogger(quiet.LIGHTNING).filters) == 1
