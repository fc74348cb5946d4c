import subprocess
import sys

import pytest
from hydra.utils import instantiate

from conftest import REPO, compose_config
from visionlab.app.config import CONF_DIR, ConfigError, check_group_overrides, validate

GROUPS = ("data", "model", "optimizer", "scheduler", "callbacks", "logger", "trainer")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_of_every_group_composes(group, option, tmp_path):
    cfg = compose_config([f"{group}={option}"], output_dir=tmp_path)
    validate(cfg)
    assert cfg.hydra.runtime.choices[group] == option


def test_defaults_are_cnn_adam_fashion_mnist(tmp_path):
    choices = compose_config([], output_dir=tmp_path).hydra.runtime.choices
    assert (choices.model, choices.optimizer, choices.data) == ("cnn", "adam", "fashion_mnist")


def test_plateau_scheduler_is_the_notes_one(tmp_path):
    cfg = compose_config(["scheduler=plateau"], output_dir=tmp_path)
    sched = instantiate(cfg.scheduler)
    assert sched["monitor"] == "val/loss"
    assert sched["factory"].keywords["factor"] == 0.2 and sched["factory"].keywords["patience"] == 5


@pytest.mark.parametrize(
    "override,message",
    [
        ("optimizer.lr=-1", "optimizer.lr=-1 is not allowed; expected a finite number > 0"),
        ("model.dropout=1.5", "model.dropout=1.5 is not allowed; expected a number in [0, 1)"),
        ("model.activation=swish", "model.activation='swish' is not allowed; expected one of relu"),
        ("model.init=xavier", "model.init='xavier' is not allowed; expected one of torch, glorot_uniform"),
        ("model=mlp", None),
        ("data.batch_size=0", "data.batch_size=0 is not allowed; expected an integer >= 1"),
        ("task.loss=mse", "task.loss='mse' is not allowed; expected one of cross_entropy, hinge"),
    ],
)
def test_validate_names_key_value_and_allowed(override, message, tmp_path):
    cfg = compose_config([override], output_dir=tmp_path)
    if message is None:
        validate(cfg)
        return
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value).startswith(message)


def test_mlp_with_empty_hidden_list_is_refused(tmp_path):
    cfg = compose_config(["model=mlp", "model.hidden=[]"], output_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"model.hidden=\[\] is not allowed"):
        validate(cfg)


def test_unknown_group_option_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match="model=nope is not an option; allowed: cnn, mlp"):
        check_group_overrides(["model=nope"])
    with pytest.raises(ConfigError, match="optimizer=adamx is not an option"):
        check_group_overrides(["optimizer=sgd,adamx"])
    check_group_overrides(["model=mlp", "optimizer=sgd,adam", "model.dropout=0.1", "hydra.verbose=true"])


@pytest.mark.parametrize(
    "override,expected",
    [
        ("model=nope", "model=nope is not an option; allowed: cnn, mlp"),
        ("optimizer.lr=-1", "optimizer.lr=-1 is not allowed"),
        ("model.dropout=1.5", "model.dropout=1.5 is not allowed"),
        ("data.val_size=70000", "data.val_size=70000 must be smaller than the 60000 training images"),
        ("model.activation=swish", "model.activation='swish' is not allowed"),
    ],
)
def test_bad_override_fails_fast_in_one_line(override, expected, tmp_path):
    from conftest import run_main
    from visionlab.entrypoints.train import main

    code, err = run_main(main, [override, f"paths.log_dir={tmp_path}", f"paths.data_dir={tmp_path}/data"])
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], err[-2000:]
    assert "Traceback" not in err
    assert not (tmp_path / "data").exists(), "no data may be read or fetched before the config is checked"


def test_the_train_script_itself_reports_bad_input_in_one_line(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "train.py"),
            "model.dropout=1.5",
            f"paths.log_dir={tmp_path}",
            f"paths.data_dir={tmp_path}/data",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: model.dropout=1.5 is not allowed")


# Each key is checked by the component that defines it (its CHECKS, found through the
# config's _target_), or by the entry point for train.yaml's own keys: same one-line errors.
@pytest.mark.parametrize(
    "overrides,message",
    [
        (["optimizer.weight_decay=-1"], "optimizer.weight_decay=-1 is not allowed; expected a finite number >= 0"),
        (
            ["optimizer=momentum", "optimizer.momentum=1"],
            "optimizer.momentum=1 is not allowed; expected a number in [0, 1)",
        ),
        (["model.kernel_size=0"], "model.kernel_size=0 is not allowed; expected an integer >= 1"),
        (["model.channels=[]"], "model.channels=[] is not allowed; expected a non-empty list of positive integers"),
        (["model.dense=[0]"], "model.dense=[0] is not allowed; expected a list of positive integers"),
        (
            ["model=resnet18", "model.backbone_lr_scale=0"],
            "model.backbone_lr_scale=0 is not allowed; expected a finite number > 0",
        ),
        (
            ["model=resnet18", "model.image_size=0"],
            "model.image_size=0 is not allowed; expected an integer >= 1, or null",
        ),
        (["model=timm", "model.dropout=1"], "model.dropout=1 is not allowed; expected a number in [0, 1)"),  # inherited
        (["data.eval_batch_size=0"], "data.eval_batch_size=0 is not allowed; expected an integer >= 1"),
        (["data.val_size=1.0"], "data.val_size=1.0 is not allowed; expected a whole count >= 0 (5000) or a fraction"),
        (["data.num_workers=-1"], "data.num_workers=-1 is not allowed; expected an integer in 0.."),
        (
            ["data.augment.randaugment_magnitude=31"],
            "data.augment.randaugment_magnitude=31 is not allowed; expected an integer in 0..30",
        ),
        (
            ["data=image_folder", "data.color=sepia"],
            "data.color='sepia' is not allowed; expected one of rgb, grayscale",
        ),
        (["data=image_folder", "data.image_size=0"], "data.image_size=0 is not allowed; expected an integer >= 1"),
        (
            ["data=image_folder", "data.loader=disk"],
            "data.loader='disk' is not allowed; expected one of memory, dataloader, stream, auto",
        ),
        (
            ["data=image_folder", "data.stream_above=0"],
            "data.stream_above=0 is not allowed; expected a share of available memory in (0, 1]",
        ),
        (["task.label_smoothing=1"], "task.label_smoothing=1 is not allowed; expected a number in [0, 1)"),
        (["task.l1=-1"], "task.l1=-1 is not allowed; expected a finite number >= 0"),
        (["scheduler.interval=batch"], "scheduler.interval='batch' is not allowed; expected step or epoch"),
        (
            ["scheduler=plateau", "scheduler.monitor=val/accuracy"],
            "scheduler.monitor='val/accuracy' is never logged; expected one of train/loss",
        ),
        (["callbacks.early_stopping.monitor=val/nope"], "callbacks.early_stopping.monitor='val/nope' is never logged"),
        (["seed=-1"], "seed=-1 is not allowed; expected an integer >= 0"),
        (
            ["trainer.max_epochs=0"],
            "trainer.max_epochs=0 is not allowed; expected an integer >= 1, -1 (no limit) or null",
        ),
        (["tune.num_training=2"], "tune.num_training=2 is not allowed; expected an integer >= 3"),
        (
            ["finetune.unfreeze_at_epoch=-1"],
            "finetune.unfreeze_at_epoch=-1 is not allowed; expected an integer >= 0, or null",
        ),
    ],
)
def test_each_component_checks_its_own_keys(overrides, message, tmp_path):
    from visionlab.app.assemble import CHECKS

    cfg = compose_config(overrides, output_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(cfg, CHECKS)
    assert str(err.value).startswith(message)


def test_null_means_the_components_default_and_passes(tmp_path):
    from visionlab.app.assemble import CHECKS

    validate(
        compose_config(
            ["model=resnet18", "model.image_size=null", "finetune.unfreeze_at_epoch=null"], output_dir=tmp_path
        ),
        CHECKS,
    )
