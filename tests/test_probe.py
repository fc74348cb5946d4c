"""visionlab.utils.probe: the one forward probe of the summary, the memory check and Grad-CAM."""

import pytest
import torch
from torch import nn

from visionlab.utils.probe import forward_probe, leaf_modules


def net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3)))


def test_it_records_each_call_in_order_without_touching_the_net():
    model = net().train()
    stats = model[1].running_mean.clone()
    seen = []
    forward_probe(
        model,
        torch.randn(2, 1, 6, 6),
        [m for _, m in leaf_modules(model)],
        lambda layer, out: seen.append((type(layer).__name__, tuple(out.shape), out.requires_grad)),
    )
    assert seen == [
        ("Conv2d", (2, 2, 4, 4), False),
        ("BatchNorm2d", (2, 2, 4, 4), False),
        ("Flatten", (2, 32), False),
        ("Linear", (2, 3), False),
    ]
    assert model.training and torch.equal(model[1].running_mean, stats)
    assert all(not m._forward_hooks for m in model.modules())


def test_a_failing_forward_leaves_the_net_as_it_was():
    model = net().train()
    with pytest.raises(RuntimeError):
        forward_probe(model, torch.randn(2, 3, 6, 6), [model[0]], lambda layer, out: None)  # 3 channels, not 1
    assert model.training and not model[0]._forward_hooks


def test_leaf_modules_are_named_as_in_the_net():
    assert [name for name, _ in leaf_modules(net())] == ["0", "1", "2.0", "2.1"]
