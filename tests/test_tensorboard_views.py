"""The TensorBoard views land in the event files: read back with TensorBoard's own reader."""

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from visionlab.app.fit import train
from visionlab.training.tensorboard_views import confusion_matrix, filters_image


def read_events(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "histograms": 0, "tensors": 0})
    events.Reload()
    return events


def hparams_data(events: EventAccumulator) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    return {
        tag: plugin_data_pb2.HParamsPluginData.FromString(content)
        for tag, content in events.PluginTagToContent("hparams").items()
    }


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    """Three epochs of a small CNN with every TensorBoard view on, validation images every 2."""
    from conftest import FAST, compose_config

    out = tmp_path_factory.mktemp("tb")
    cfg = compose_config(
        [
            *FAST,
            "model=cnn",
            "model.channels=[4,8]",
            "model.dense=[16]",
            "trainer.max_epochs=3",
            "logger=tensorboard",
            "logger.histograms=true",
            "callbacks=tensorboard",
            "callbacks.validation_images.every_n_epochs=2",
        ],
        output_dir=out,
    )
    train(cfg)
    return read_events(out / "tensorboard")


def test_hp_metric_is_the_best_val_acc_and_hparams_are_registered(cnn_run):
    val_acc = [s.value for s in cnn_run.Scalars("val/acc")]
    hp_metric = [s.value for s in cnn_run.Scalars("hp_metric") if s.value == s.value]  # NaN until the first val
    assert len(val_acc) == 3 and hp_metric == [max(val_acc[:n]) for n in (1, 2, 3)]
    data = hparams_data(cnn_run)
    assert [m.name.tag for m in data["_hparams_/experiment"].experiment.metric_infos] == ["hp_metric"]
    session = data["_hparams_/session_start_info"].session_start_info.hparams
    assert session["model.activation"].string_value == "relu"
    assert session["optimizer.lr"].number_value == pytest.approx(0.001)


def test_images_graph_and_histograms_are_written_at_their_cadence(cnn_run):
    tags = cnn_run.Tags()
    # validation images every 2nd epoch (epoch 1) and after the last (epoch 2); filters every epoch
    for tag, steps in (
        ("val/confusion_matrix", [1, 2]),
        ("val/samples", [1, 2]),
        ("model/first_conv_filters", [0, 1, 2]),
    ):
        images = cnn_run.Images(tag)
        assert [i.step for i in images] == steps, tag
        assert images[0].encoded_image_string.startswith(b"\x89PNG")
    assert tags["graph"]
    assert "weights/features.0.weight" in tags["histograms"] and "grads/features.0.weight" in tags["histograms"]


def test_evaluate_pictures_and_ece_are_written_once_when_fitting_ends(cnn_run):
    for tag in ("val/mistakes", "val/per_class", "val/reliability"):
        images = cnn_run.Images(tag)
        assert len(images) == 1 and images[0].encoded_image_string.startswith(b"\x89PNG"), tag
    (ece,) = cnn_run.Scalars("val/ece")
    assert 0 <= ece.value <= 1


def test_testing_writes_the_test_splits_pictures(tmp_path, cfg_factory):
    train(cfg_factory("model=mlp", "model.hidden=[8]", "logger=tensorboard", "callbacks=tensorboard", "test=true"))
    tags = read_events(tmp_path / "tensorboard").Tags()
    assert {"test/mistakes", "test/per_class", "test/reliability"} <= set(tags["images"])
    assert "test/ece" in tags["scalars"]


def test_histograms_stay_off_by_default_and_mlp_has_no_filters(tmp_path, cfg_factory):
    cfg = cfg_factory("model=mlp", "logger=tensorboard", "callbacks=tensorboard")
    train(cfg)
    tags = read_events(tmp_path / "tensorboard").Tags()
    assert tags["histograms"] == []
    assert "val/confusion_matrix" in tags["images"] and "model/first_conv_filters" not in tags["images"]


def test_confusion_matrix_counts_true_rows_predicted_columns():
    counts = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    assert counts.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_filters_image_is_one_grid_scaled_to_unit_range():
    grid = filters_image(torch.randn(8, 1, 3, 3))
    assert grid.shape[0] == 3 and grid.min() >= 0 and grid.max() <= 1 and grid.shape[1] >= 2 * 24
