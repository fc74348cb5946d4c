"""Values mean something or are refused (issues 25 and 28): each row is a command line a
careless or hostile user typed, and its outcome, either the exact one-line refusal naming
the value, made before any data is read or anything written, or a run that does what
Lightning documents. The refusal rows run the real `prepare_run` of `train` in-process
(config composition and checks only), so the table costs seconds.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import run_main
from visionlab.app.assemble import CHECKS, build
from visionlab.app.cli import prepare_run
from visionlab.app.config import CONF_DIR, ConfigError, compose_config, validate
from visionlab.app.fit import train
from visionlab.data.datamodule import available_cores
from visionlab.data.transforms import Augment
from visionlab.entrypoints.evaluate import check_held_out
from visionlab.entrypoints.train import main as train_main
from visionlab.training.checkpoint import CheckpointError, build_net, load_model

CORES = available_cores()
REFUSED = [
    # training that trains nothing, or never stops where it says
    (
        ["trainer.limit_train_batches=0"],
        "trainer.limit_train_batches=0 is not allowed; expected a count of batches "
        ">= 1, a fraction in (0, 1], or null (all); a run must train",
    ),
    (["trainer.limit_train_batches=0.0"], "trainer.limit_train_batches=0.0 is not allowed"),
    (["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches=1.5 is not allowed"),
    (
        ["trainer.limit_val_batches=-1"],
        "trainer.limit_val_batches=-1 is not allowed; expected a count of batches "
        ">= 0, a fraction in [0, 1], or null (all); 0: no validation",
    ),
    (
        ["trainer.limit_test_batches=0"],
        "trainer.limit_test_batches=0 is not allowed; expected a count of batches "
        ">= 1, a fraction in (0, 1], or null (all); test=false skips testing",
    ),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 is not allowed; expected an integer >= 1, -1 (no limit) or null"),
    (["trainer.max_epochs=2.5"], "trainer.max_epochs=2.5 is not allowed"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 is not allowed; expected an integer >= 1, or -1 (no limit)"),
    (["trainer.max_steps=-5"], "trainer.max_steps=-5 is not allowed"),
    (["trainer.min_epochs=-3"], "trainer.min_epochs=-3 is not allowed; expected an integer >= 0, or null"),
    (["+trainer.min_steps=-1"], "trainer.min_steps=-1 is not allowed; expected an integer >= 0, or null"),
    (
        ["+trainer.max_time=abc"],
        "trainer.max_time='abc' is not allowed; expected a duration: 'DD:HH:MM:SS' or "
        "{days,hours,minutes,seconds} with a total above 0",
    ),
    (["+trainer.max_time=00:00:00:00"], "trainer.max_time='00:00:00:00' is not allowed"),
    (["+trainer.max_time={minutes:-1}"], "trainer.max_time={'minutes': -1} is not allowed"),
    (["+trainer.max_time={weeks:1}"], "trainer.max_time={'weeks': 1} is not allowed"),
    # Lightning: ZeroDivisionError at the first step; dicts were Lightning 1's schedule
    (
        ["+trainer.accumulate_grad_batches=0"],
        "trainer.accumulate_grad_batches=0 is not allowed; expected an "
        "integer >= 1 (a schedule by epoch is Lightning's GradientAccumulationScheduler callback)",
    ),
    (["+trainer.accumulate_grad_batches=-2"], "trainer.accumulate_grad_batches=-2 is not allowed"),
    (["+trainer.accumulate_grad_batches={0:2,4:1}"], "trainer.accumulate_grad_batches={0: 2, 4: 1} is not allowed"),
    # silently off
    (
        ["+trainer.gradient_clip_val=-1"],
        "trainer.gradient_clip_val=-1 is not allowed; expected a finite number >= 0 (0 or null: no clipping)",
    ),
    (["+trainer.gradient_clip_val=inf"], "trainer.gradient_clip_val=inf is not allowed"),
    (
        ["+trainer.gradient_clip_algorithm=max"],
        "trainer.gradient_clip_algorithm='max' is not allowed; expected one of norm, value",
    ),
    (["data.augment.width_shift=5.0"], "data.augment.width_shift=5.0 is not allowed; expected a number in [0, 1)"),
    (["data.augment.height_shift=1.0"], "data.augment.height_shift=1.0 is not allowed; expected a number in [0, 1)"),
    (["data.augment.contrast=50"], "data.augment.contrast=50 is not allowed; expected a number in [0, 1]"),
    (["data.augment.brightness=1.5"], "data.augment.brightness=1.5 is not allowed; expected a number in [0, 1]"),
    (["data.augment.rotation=720"], "data.augment.rotation=720 is not allowed; expected degrees in [0, 180]"),
    (["data.augment.rotation=-5"], "data.augment.rotation=-5 is not allowed"),
    (["data.augment.zoom=1.0"], "data.augment.zoom=1.0 is not allowed; expected a number in [0, 1)"),
    (["data.augment.mixup=inf"], "data.augment.mixup=inf is not allowed; expected a finite Beta alpha >= 0 (0: off)"),
    (["data.augment.cutmix=nan"], "data.augment.cutmix=nan is not allowed"),
    (["optimizer.lr=inf"], "optimizer.lr=inf is not allowed; expected a finite number > 0"),
    (["optimizer.lr=nan"], "optimizer.lr=nan is not allowed; expected a finite number > 0"),
    (["optimizer.lr=0"], "optimizer.lr=0 is not allowed; expected a finite number > 0"),
    (["optimizer.weight_decay=inf"], "optimizer.weight_decay=inf is not allowed; expected a finite number >= 0"),
    # about 1,000 processes and a hang
    (
        ["data.num_workers=1000", "data.loader=dataloader"],
        f"data.num_workers=1000 is not allowed; expected an "
        f"integer in 0..{CORES} (the cores this process may use; more only adds processes)",
    ),
    # were tracebacks
    (["data.batch_size=null"], "data.batch_size=null is not allowed; expected an integer >= 1"),
    (["data.eval_batch_size=null"], "data.eval_batch_size=null is not allowed; expected an integer >= 1"),
    (["~model"], "model=null is not allowed; expected an option of the model group (cnn, mlp,"),
    (["~optimizer"], "optimizer=null is not allowed; expected an option of the optimizer group (adagrad, adam,"),
    (["~data"], "data=null is not allowed; expected an option of the data group (cifar10, fashion_mnist,"),
    (["seed=null"], "seed=null is not allowed; expected an integer >= 0"),
    (
        ["scheduler=plateau", "trainer.limit_val_batches=0"],
        "scheduler.monitor=val/loss is never logged with "
        "trainer.limit_val_batches=0 (no validation); monitor a train/* metric or choose another scheduler",
    ),
    (["scheduler=plateau", "data.val_size=0"], "scheduler.monitor=val/loss is never logged with data.val_size=0"),
    # Trainer flags Lightning refuses late, or takes to mean nothing
    (
        ["trainer.devices=0"],
        "trainer.devices=0 is not allowed; expected an integer >= 1, -1 (all), auto, or a "
        "non-empty list of device indices",
    ),
    (["trainer.devices=-2"], "trainer.devices=-2 is not allowed"),
    (["trainer.devices=[]"], "trainer.devices=[] is not allowed"),
    (
        ["trainer.precision=12"],
        "trainer.precision=12 is not allowed; expected one of 64-true, 64, 32-true, 32, "
        "16-mixed, 16, bf16-mixed, bf16, 16-true, bf16-true, transformer-engine, transformer-engine-float16",
    ),
    (["trainer.precision=half"], "trainer.precision='half' is not allowed"),
    (
        ["+trainer.val_check_interval=0"],
        "trainer.val_check_interval=0 is not allowed; expected a count of training "
        "batches >= 1, a fraction of the epoch in (0, 1], or a duration 'DD:HH:MM:SS'",
    ),
    (["+trainer.val_check_interval=1.5"], "trainer.val_check_interval=1.5 is not allowed"),
    (
        ["data=synthetic", "+trainer.val_check_interval=100"],
        "trainer.val_check_interval=100 is more than the 14 "
        "training batches of an epoch; expected at most that, or trainer.check_val_every_n_epoch=null to count batches "
        "across epochs",
    ),
    (["+trainer.val_check_interval=1000"], "trainer.val_check_interval=1000 is more than the 860 training batches"),
    (
        ["trainer.check_val_every_n_epoch=0"],
        "trainer.check_val_every_n_epoch=0 is not allowed; expected an integer >= 1, or null",
    ),
    (
        ["trainer.num_sanity_val_steps=-2"],
        "trainer.num_sanity_val_steps=-2 is not allowed; expected an integer >= 0, or -1 (all)",
    ),
    (["trainer.log_every_n_steps=-1"], "trainer.log_every_n_steps=-1 is not allowed; expected an integer >= 0"),
    (["trainer.fast_dev_run=-1"], "trainer.fast_dev_run=-1 is not allowed; expected true, false or a count >= 0"),
]

ACCEPTED = [
    ["trainer.limit_val_batches=0"],
    ["data.val_size=0"],
    ["trainer.max_epochs=null"],
    ["trainer.max_epochs=-1", "scheduler=none"],
    ["trainer.max_steps=100"],
    ["trainer.limit_train_batches=0.25"],
    ["trainer.limit_val_batches=0.0"],
    ["+trainer.max_time=00:00:01:00"],
    ["+trainer.max_time={minutes:1.5}"],
    ["trainer.min_epochs=null"],
    ["+trainer.min_steps=5"],
    ["+trainer.gradient_clip_val=0"],
    ["+trainer.gradient_clip_val=0.5"],
    ["+trainer.accumulate_grad_batches=4"],
    ["+trainer.val_check_interval=0.25"],
    ["+trainer.val_check_interval=100"],
    ["+trainer.val_check_interval=1000", "trainer.check_val_every_n_epoch=null"],
    ["+trainer.val_check_interval=00:00:10:00"],
    ["trainer.devices=auto"],
    ["trainer.devices=[0]"],
    ["trainer.devices=-1"],
    ["trainer.precision=64"],
    ["trainer.precision=64-true"],
    ["trainer.precision=bf16-mixed"],
    ["trainer.precision=16-mixed"],
    ["trainer.fast_dev_run=3"],
    ["data.augment.width_shift=0.99"],
    ["data.augment.contrast=1"],
    ["data.augment.rotation=180"],
    ["data.augment.mixup=0.4"],
    ["optimizer.lr=1e-5"],
    [f"data.num_workers={CORES}", "data.loader=dataloader"],
    ["scheduler=plateau", "scheduler.monitor=train/loss", "data.val_size=0"],
]


def refusal(overrides: list[str], tmp_path: Path) -> str | None:
    """The one-line refusal of `train`'s `prepare_run` for `overrides`, or None; nothing may be written."""
    try:
        prepare_run(
            "train", [*overrides, f"paths.log_dir={tmp_path}/outputs", f"paths.data_dir={tmp_path}/data"], CHECKS
        )
    except ConfigError as err:
        return str(err)
    finally:
        assert not any(tmp_path.iterdir()), "a check wrote something"
    return None


@pytest.fixture(scope="module")
def checked() -> Callable[[list[str]], str | None]:
    """The refusal of `train`'s checks for `overrides`, or None. Hydra composes in about 0.3 s,
    so value overrides go onto one composed config as Hydra applies them (its override parser,
    then OmegaConf.update); overrides choosing or deleting a group are composed by prepare_run."""
    base = compose_config([])
    parser = OverridesParser.create()

    def check(overrides: list[str]) -> str | None:
        parsed = parser.parse_overrides(overrides)
        if any(o.is_delete() or (CONF_DIR / o.key_or_group.replace(".", "/")).is_dir() for o in parsed):
            with tempfile.TemporaryDirectory() as folder:
                return refusal(overrides, Path(folder))
        cfg = copy.deepcopy(base)
        for o in parsed:
            OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True, force_add=o.is_add())
        try:
            validate(cfg, CHECKS)
        except ConfigError as err:
            return str(err)
        return None

    return check


@pytest.mark.parametrize("overrides,message", REFUSED, ids=[" ".join(o) for o, _ in REFUSED])
def test_a_meaningless_value_is_refused_in_one_line_naming_it(overrides, message, checked):
    got = checked(overrides)
    assert got is not None and got.startswith(message), got
    assert "\n" not in got


@pytest.mark.parametrize("overrides", ACCEPTED, ids=[" ".join(o) for o in ACCEPTED])
def test_a_value_lightning_documents_is_accepted(overrides, checked):
    assert checked(overrides) is None


@pytest.mark.parametrize("row", [0, 15, 18, 30, 35])
def test_the_table_says_what_prepare_run_says(row, tmp_path, checked):
    overrides, _ = REFUSED[row]
    assert refusal(overrides, tmp_path) == checked(overrides) is not None


def test_the_train_command_refuses_before_writing_anything(tmp_path):
    code, err = run_main(
        train_main,
        ["trainer.limit_train_batches=0", f"hydra.run.dir={tmp_path}/run", f"paths.data_dir={tmp_path}/data"],
    )
    assert code == 2 and err.strip() == (
        "error: trainer.limit_train_batches=0 is not allowed; expected a count of "
        "batches >= 1, a fraction in (0, 1], or null (all); a run must train"
    )
    assert not any(tmp_path.iterdir())


def test_augment_built_in_python_is_checked_too():
    with pytest.raises(
        ConfigError, match=r"^data.augment.width_shift=5.0 is not allowed; expected a number in \[0, 1\)$"
    ):
        Augment(width_shift=5.0)


# --- runs that validate nothing: the default callbacks, then last.ckpt tested, loudly ----------

TINY = (
    "data=synthetic",
    "data.train_size=96",
    "data.val_size=32",
    "data.test_size=32",
    "data.batch_size=16",
    "model=mlp",
    "model.hidden=[8]",
    "callbacks=default",
    "logger=many",
    "trainer.enable_checkpointing=true",
    "test=true",
    "callbacks.history.plot=false",
    "trainer.limit_train_batches=null",
    "trainer.limit_val_batches=null",
    "callbacks.insight_figures.max_images=8",
)


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.limit_val_batches=0"],
        ["data.val_size=0"],
        ["trainer.max_steps=2"],
        ["trainer.max_epochs=null", "trainer.max_steps=2"],
    ],
    ids=" ".join,
)
def test_a_run_without_validation_saves_and_tests_its_last_weights(overrides, cfg_factory, tmp_path, caplog):
    """Lightning trains without validation; visionlab's early stopping and best checkpoint
    (they monitor val/*) then have nothing to act on, and the last weights are tested."""
    with caplog.at_level(logging.INFO, logger="visionlab"):
        metrics = train(cfg_factory(*TINY, *overrides))
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.is_file() and not any(k.startswith("val/") for k in metrics)
    assert 0 <= metrics["test/acc"] <= 1
    saved = (tmp_path / "metrics.json").read_text()
    assert f'"test/ckpt_path": "{last}"' in saved
    assert (
        f"no validation ran, so no val/* metric: no best checkpoint and no early stopping; testing the last "
        f"weights ({last})" in caplog.text
    )


def test_max_time_ends_a_run_with_its_weights_tested(cfg_factory, tmp_path):
    metrics = train(cfg_factory(*TINY, "trainer.max_epochs=-1", "scheduler=none", "+trainer.max_time={seconds:1}"))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and 0 <= metrics["test/acc"] <= 1


def test_float16_weights_that_diverge_say_so_not_lower_the_learning_rate(cfg_factory):
    """16-true keeps Adam's state in float16, where its eps is 0: NaN at the second step."""
    with pytest.raises(
        FloatingPointError,
        match=r"loss is nan at step 1 .*; float16 weights "
        r"\(trainer.precision=16-true\) overflow and underflow; use "
        r"trainer.precision=16-mixed or bf16-true$",
    ):
        train(cfg_factory(*TINY, "trainer.precision=16-true", "trainer.fast_dev_run=2"))


@pytest.mark.parametrize(
    "overrides,meaning",
    [
        ([], "1000 epochs"),
        (["trainer.max_steps=7"], "no epoch limit (trainer.max_steps or trainer.max_time ends the run)"),
        (["+trainer.max_time=00:00:01:00"], "no epoch limit (trainer.max_steps or trainer.max_time ends the run)"),
    ],
)
def test_max_epochs_null_is_lightnings_default_and_says_so(overrides, meaning, cfg_factory, caplog):
    with caplog.at_level(logging.INFO, logger="visionlab"):
        build(cfg_factory("trainer.max_epochs=null", "scheduler=none", *overrides))
    assert f"trainer.max_epochs=null: Lightning's default applies: {meaning}\n" in caplog.text


# --- checkpoints edited to predict nonsense ------------------------------------------------

MLP = {"_target_": "visionlab.models.mlp.MLP", "hidden": [4]}


def checkpoint(**meta: object) -> dict:
    net = build_net(MLP, (1, 4, 4), 2)
    base = {"model": MLP, "classes": ["Bag", "Coat"], "input_shape": [1, 4, 4], "mean": [0.3], "std": [0.3]}
    return {"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "visionlab": {**base, **meta}}


@pytest.mark.parametrize(
    "meta,message",
    [
        ({"std": [0.0]}, "its metadata std=[0.0] is not usable; expected 1 finite number(s) > 0, one per channel"),
        ({"std": [float("nan")]}, "its metadata std=[nan] is not usable"),
        (
            {"mean": [float("inf")]},
            "its metadata mean=[inf] is not usable; expected 1 finite number(s), one per channel",
        ),
        ({"mean": [0.1, 0.2]}, "its metadata mean=[0.1, 0.2] is not usable"),
        ({"std": "0.3"}, "its metadata std='0.3' is not usable"),
        ({"classes": "BagCoat"}, "its metadata classes='BagCoat' is not usable; expected a list of class names"),
        ({"classes": [1, 2]}, "its metadata classes=[1, 2] is not usable"),
        ({"input_shape": [1, 0, 4]}, "its metadata input_shape=[1, 0, 4] is not usable; expected three positive"),
    ],
)
def test_edited_checkpoint_metadata_is_refused_on_load(meta, message):
    with pytest.raises(CheckpointError) as err:
        load_model(checkpoint(**meta), "run/last.ckpt")
    assert str(err.value) == f"ckpt_path=run/last.ckpt: {message}" or str(err.value).startswith(
        f"ckpt_path=run/last.ckpt: {message}"
    )


def test_nan_weights_are_refused_on_load():
    ckpt = checkpoint()
    ckpt["state_dict"]["net.1.weight"] = torch.full_like(ckpt["state_dict"]["net.1.weight"], math.nan)
    with pytest.raises(CheckpointError, match=r"^ckpt_path=x.ckpt: weight 1.weight holds NaN or inf"):
        load_model(ckpt, "x.ckpt")
    assert load_model(checkpoint(), "x.ckpt").classes == ("Bag", "Coat")  # the unedited one loads


# --- eval split=val must be the split the run held out ------------------------------------

RUN = OmegaConf.create(
    {
        "data": {
            "_target_": "visionlab.data.FashionMNISTDataModule",
            "val_size": 5000,
            "split_seed": 42,
            "batch_size": 64,
        }
    }
)


@pytest.mark.parametrize(
    "change,message",
    [
        (
            {"val_size": 30000},
            "split=val with data.val_size=30000: the run held out its val split with "
            "data.val_size=5000, so this one would hold images it trained on; drop the override or use split=test",
        ),
        ({"split_seed": 1}, "split=val with data.split_seed=1: the run held out its val split with data.split_seed=42"),
        (
            {"_target_": "visionlab.data.MNISTDataModule"},
            "split=val with data._target_='visionlab.data.MNISTDataModule'",
        ),
    ],
)
def test_eval_on_a_val_split_the_run_trained_on_is_refused(change, message):
    combined = OmegaConf.merge(RUN, {"data": change})
    with pytest.raises(ConfigError) as err:
        check_held_out(combined, RUN)
    assert str(err.value).startswith(message)
    check_held_out(OmegaConf.merge(RUN, {"data": {"batch_size": 8}}), RUN)  # other keys change nothing


def test_eval_on_val_without_the_run_config_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="visionlab"):
        check_held_out(RUN, None)
    assert "split=val: no run config beside the checkpoint says which images the run held out" in caplog.text
