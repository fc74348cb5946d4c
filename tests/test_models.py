import pytest
import torch
from torch import nn

from visionlab.models import ACTIVATIONS, CNN, MLP, make_activation


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_mlp_matches_the_notes_keras_parameter_count():
    assert n_params(MLP((1, 28, 28), 10, hidden=[300, 100])) == 266_610


def test_mlp_optional_batchnorm_and_dropout_layers():
    m = MLP((1, 28, 28), 10, hidden=[32, 16], batch_norm=True, dropout=0.3, activation="elu")
    kinds = [type(layer) for layer in m]
    assert kinds.count(nn.BatchNorm1d) == 2 and kinds.count(nn.Dropout) == 2 and kinds.count(nn.ELU) == 2
    assert m(torch.randn(4, 1, 28, 28)).shape == (4, 10)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_cnn_output_shape_for_each_input(shape):
    net = CNN(shape, 7)
    assert net(torch.randn(2, *shape)).shape == (2, 7)


def test_cnn_valid_padding_on_28x28_still_fits_three_blocks():
    net = CNN((1, 28, 28), 10, padding=0)
    assert net(torch.randn(1, 1, 28, 28)).shape == (1, 10)


@pytest.mark.parametrize("shape,kwargs", [((1, 8, 8), {"padding": 0}), ((3, 4, 4), {})])
def test_cnn_too_small_image_fails_at_construction(shape, kwargs):
    with pytest.raises(ValueError, match="too small for 3 conv blocks"):
        CNN(shape, 10, **kwargs)


def test_cnn_layers_follow_the_config():
    net = CNN((3, 32, 32), 10, channels=[8, 16], batch_norm=False, activation="tanh", dense=[20], dropout=0.2)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, nn.Tanh) for m in net.modules())
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.2]


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation_by_name(name):
    out = make_activation(name)(torch.tensor([-1.0, 0.0, 2.0]))
    assert out.shape == (3,)


def test_unknown_activation_names_the_allowed_ones():
    with pytest.raises(ValueError, match="activation='swish' is unknown; allowed: relu, leaky_relu"):
        make_activation("swish")


@pytest.mark.parametrize("net_kind", ["mlp", "cnn"])
@pytest.mark.parametrize(
    "init,bound,std",
    [
        # Keras: glorot_uniform limit sqrt(6 / (fan_in + fan_out)); he_normal std sqrt(2 / fan_in), cut at 2 std
        ("glorot_uniform", lambda i, o: (6 / (i + o)) ** 0.5, lambda i, o: (2 / (i + o)) ** 0.5),
        ("glorot_normal", lambda i, o: 2 * (2 / (i + o)) ** 0.5 / 0.8796, lambda i, o: (2 / (i + o)) ** 0.5),
        ("he_uniform", lambda i, o: (6 / i) ** 0.5, lambda i, o: (2 / i) ** 0.5),
        ("he_normal", lambda i, o: 2 * (2 / i) ** 0.5 / 0.8796, lambda i, o: (2 / i) ** 0.5),
    ],
)
def test_keras_initialisations_draw_weights_of_the_right_scale_and_zero_biases(net_kind, init, bound, std):
    torch.manual_seed(0)
    net = MLP((1, 28, 28), 10, init=init) if net_kind == "mlp" else CNN((1, 28, 28), 10, init=init)
    layers = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for layer in layers:
        w = layer.weight.detach()
        fan_in = w[0].numel()
        fan_out = w.shape[0] * w[0, 0].numel()
        assert w.abs().max() <= bound(fan_in, fan_out) + 1e-6
        if w.numel() >= 5000:  # enough draws for the sample std to be within 5%
            assert w.std().item() == pytest.approx(std(fan_in, fan_out), rel=0.05)
        assert layer.bias is None or not layer.bias.any()


def test_torch_init_keeps_pytorch_defaults():
    torch.manual_seed(0)
    default = MLP((1, 28, 28), 10)
    torch.manual_seed(0)
    keras = MLP((1, 28, 28), 10, init="glorot_uniform")
    torch.manual_seed(0)
    same = MLP((1, 28, 28), 10, init="torch")
    assert all(torch.equal(a, b) for a, b in zip(default.parameters(), same.parameters()))
    assert not torch.equal(default[1].weight, keras[1].weight) and default[1].bias.any()


def test_unknown_init_names_the_allowed_ones():
    with pytest.raises(ValueError, match="model.init='xavier' is unknown; allowed: torch, glorot_uniform"):
        CNN((1, 28, 28), 10, init="xavier")
