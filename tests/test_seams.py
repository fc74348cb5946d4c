"""Every private name of a dependency visionlab uses is reached through one function of one
seam module per dependency, and each is tested here as it is used: when a pinned version
renames or changes one, a test of this file fails, naming it."""

import ast
from pathlib import Path

import lightning as L
import optuna
import pytest
import torch
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.loggers import Logger
from omegaconf import OmegaConf
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2

from conftest import REPO
from visionlab.app import hydra_seams, optuna_seams
from visionlab.training import trainer_state
from visionlab.utils import torch_seams, torchvision_seams

SRC = REPO / "src"
# The modules allowed to touch dependencies' private names; streaming.py's TrainingStreamLoader
# adjusts litdata counters it inherits (on self: tests/test_streaming.py resumes through them).
SEAMS = {
    "visionlab/training/trainer_state.py",
    "visionlab/utils/torch_seams.py",
    "visionlab/utils/torchvision_seams.py",
    "visionlab/app/hydra_seams.py",
    "visionlab/app/optuna_seams.py",
}


def private_uses(path: Path) -> list[str]:
    """`x._name` on anything but self, cls or super(), and imports of private modules or names from
    outside visionlab."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        # `_target_` and `__dict__` are config keys and Python's own, not private names
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.endswith("_"):
            owner = node.value
            mine = (isinstance(owner, ast.Name) and owner.id in ("self", "cls")) or (
                isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super"
            )
            if not mine:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith("visionlab"):
            if "._" in node.module or any(a.name.startswith("_") for a in node.names):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: from {node.module} import _")
    return found


def test_private_names_of_dependencies_are_reached_only_through_the_seams():
    uses = [
        use
        for path in sorted(SRC.rglob("*.py"))
        if str(path.relative_to(SRC)) not in SEAMS
        for use in private_uses(path)
    ]
    assert uses == []


# --- Lightning: visionlab.training.trainer_state --------------------------------------------
class Recorder(Logger):
    """The steps Lightning writes a step metric at."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    name, version = "recorder", 0

    def log_metrics(self, metrics, step=None) -> None:
        if "seen" in metrics:
            self.steps.append(step)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


class Probe(L.LightningModule):
    """Asks the seams at every training step what the trainer is doing."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)
        self.writes: list[bool] = []
        self.done: list[tuple[int, int]] = []

    def training_step(self, batch, batch_idx):
        self.writes.append(trainer_state.loggers_write_this_step(self.trainer))
        self.done.append((batch_idx, trainer_state.batches_done(self.trainer)))
        self.log("seen", float(batch_idx))
        return self.layer(batch[0]).sum()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.done.append((batch_idx, trainer_state.batches_done(self.trainer)))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(**flags) -> tuple[Probe, L.Trainer]:
    probe, loader = Probe(), DataLoader(TensorDataset(torch.randn(20, 2)), batch_size=2)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **flags,
    )
    trainer.fit(probe, loader)
    return probe, trainer


@pytest.fixture(scope="module")
def fitted() -> tuple[Probe, L.Trainer, Recorder, EMAWeightAveraging]:
    recorder, ema = Recorder(), EMAWeightAveraging()
    probe, trainer = fit(logger=recorder, log_every_n_steps=3, callbacks=[ema])
    return probe, trainer, recorder, ema


def test_loggers_write_this_step_is_lightnings_rule(fitted):
    probe, _, recorder, _ = fitted
    assert [step for step, writes in enumerate(probe.writes) if writes] == recorder.steps == [2, 5, 8, 11, 14, 17]


def test_every_step_of_a_fast_dev_run_is_written():
    probe, _ = fit(fast_dev_run=3)
    assert probe.writes == [True, True, True]


def test_batches_done_counts_the_batches_stepped_in_this_epoch(fitted):
    probe, trainer, _, _ = fitted
    assert probe.done == [(i, n) for i in range(10) for n in (i, i + 1)] * 2  # in the step, then at its end
    assert trainer_state.batches_done(trainer) == 10


def test_averaged_module_is_the_copy_weight_averaging_keeps(fitted):
    probe, _, _, ema = fitted
    averaged = trainer_state.averaged_module(ema)
    assert isinstance(averaged, Probe) and averaged is not probe
    assert torch.equal(averaged.layer.weight, probe.layer.weight)  # Lightning copies the average back at the end
    assert trainer_state.averaged_module(EMAWeightAveraging()) is None  # before a fit


def test_default_map_location_brings_a_missing_devices_tensors_to_the_cpu():
    storage = torch.UntypedStorage(4)
    assert trainer_state.default_map_location(storage, "cpu") is None  # torch.load's own default
    assert trainer_state.default_map_location(storage, "xla:0").device.type == "cpu"  # no XLA here


def test_lightnings_epoch_limit_rule_that_train_restates():
    """visionlab.app.assemble.check_run_length says it aloud: max_epochs=null is 1000
    epochs, or no epoch limit when max_time is set (Lightning's _parse_loop_limits)."""
    from lightning.pytorch.loops.utilities import _parse_loop_limits

    def max_epochs(**flags) -> int:
        trainer = L.Trainer(max_epochs=None, logger=False, **flags)
        return _parse_loop_limits(None, trainer.max_steps, None, None, trainer)[1]

    assert max_epochs() == 1000
    assert max_epochs(max_time="00:00:01:00") == -1


# --- torch and torchvision -------------------------------------------------------------------
def test_torchs_bf16_probes_answer_with_a_bool():
    assert isinstance(torch_seams.cpu_has_native_bf16(), bool)


def test_fan_in_and_out_of_a_conv_weight():
    assert torch_seams.fan_in_and_out(torch.empty(8, 3, 5, 5)) == (75, 200)


@pytest.mark.parametrize("policy", [v2.RandAugment(fill=7), v2.TrivialAugmentWide(fill=7)])
def test_a_policys_operations_and_their_application(policy):
    space = torchvision_seams.augmentation_space(policy)
    assert {"Identity", "Rotate", "Brightness"} <= set(space)
    magnitudes, signed = space["Rotate"]
    assert signed and len(magnitudes(31, 8, 8)) == 31
    images = torch.arange(2 * 64, dtype=torch.uint8).reshape(2, 1, 8, 8)
    assert torch.equal(torchvision_seams.apply_operation(policy, images, "Identity", 0.0), images)
    rotated = torchvision_seams.apply_operation(policy, images, "Rotate", 45.0)
    assert torch.equal(rotated, v2.functional.rotate(images, 45.0, fill=7))


# --- Hydra and Optuna: visionlab.app --------------------------------------------------------
def test_hydras_parser_splits_flags_from_overrides():
    args = hydra_seams.args_parser().parse_args(["--multirun", "model=cnn", "-cn", "train"])
    assert args.overrides == ["model=cnn"] and args.multirun and args.config_name == "train"


class HydraRecorder(HydraCallback):
    calls: list[str] = []

    def on_run_start(self, config, **kwargs) -> None:
        HydraRecorder.calls.append(f"run_start {config.name}")

    def on_run_end(self, config, **kwargs) -> None:
        HydraRecorder.calls.append(f"run_end {kwargs['job_return']}")


def test_job_callbacks_are_the_configs_hydra_callbacks_in_order():
    cfg = OmegaConf.create({"name": "x", "hydra": {"callbacks": {"rec": {"_target_": "test_seams.HydraRecorder"}}}})
    callbacks = hydra_seams.job_callbacks(cfg)
    callbacks.on_run_start(config=cfg, config_name="train")
    callbacks.on_run_end(config=cfg, config_name="train", job_return="done")
    assert HydraRecorder.calls == ["run_start x", "run_end done"]


@pytest.mark.parametrize(("status", "value"), [(JobStatus.COMPLETED, 0.5), (JobStatus.FAILED, ValueError("bad"))])
def test_job_result_is_the_value_or_the_exception(status, value, capsys):
    job = JobReturn()
    job.return_value, job.status = value, status  # as hydra.core.utils.run_job fills it
    assert hydra_seams.job_result(job) is value
    assert capsys.readouterr().err == ""


def test_optuna_storage_reaches_a_trial_by_number_and_marks_a_stale_one():
    study = optuna.create_study()
    asked = study.ask()
    trial = optuna_seams.trial_of_number(study, asked.number)
    trial.set_user_attr("from_job", 1)
    frozen = study.get_trials(deepcopy=False)[0]
    optuna_seams.set_stored_user_attr(study, frozen, "reason", "killed")
    assert optuna_seams.stored_user_attrs(study, asked) == {"from_job": 1, "reason": "killed"}
    optuna_seams.mark_failed(study, frozen)
    assert study.get_trials()[0].state == TrialState.FAIL
    assert optuna_seams.pruned_trial(PyTorchLightningPruningCallback(trial, "val/loss")) is trial
