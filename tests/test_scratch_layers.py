"""visionlab.scratch layers, loss, optimizer and batches against torch.nn / autograd (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visionlab.data import BatchTransform, MemoryLoader
from visionlab.data.loaders import LoaderEnv
from visionlab.models import CNN, MLP
from visionlab.scratch import (
    ACTIVATIONS,
    SGD,
    BatchGenerator,
    Conv2d,
    Dense,
    Flatten,
    MaxPool2d,
    Sequential,
    cross_entropy,
    from_torch,
    naive_softmax,
    softmax,
)

TOL = dict(atol=1e-5, rtol=1e-5)
F64 = torch.float64

TORCH_ACTIVATIONS = {
    "identity": lambda x: x,
    "sigmoid": torch.sigmoid,
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "elu": F.elu,
    "tanh": torch.tanh,
    "softmax": lambda x: F.softmax(x, dim=-1),
}


def vjp(fn, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fn(x) and the gradient of sum(fn(x) * grad) with respect to x, by autograd."""
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    (y * grad).sum().backward()
    return y.detach(), x.grad


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_forward_and_backward_match_autograd(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=gen, dtype=F64) * 3
    grad = torch.randn(6, 5, generator=gen, dtype=F64)
    act = ACTIVATIONS[name]
    y = act.forward(x)
    want_y, want_grad = vjp(TORCH_ACTIVATIONS[name], x, grad)
    torch.testing.assert_close(y, want_y, **TOL)
    torch.testing.assert_close(act.backward(x, y, grad), want_grad, **TOL)


def test_activations_stay_finite_on_large_inputs() -> None:
    x = torch.tensor([[-1000.0, 0.0, 1000.0]], dtype=torch.float32)
    for name, act in ACTIVATIONS.items():
        assert torch.isfinite(act.forward(x)).all(), name


def test_naive_softmax_normalises_the_whole_matrix_and_overflows() -> None:
    notes = torch.tensor([[1.0, 2, 3], [4, 0, 6]], dtype=F64)
    # the values printed in the notes, and a sum of 1 over the matrix, not per row
    torch.testing.assert_close(
        naive_softmax(notes),
        torch.tensor([[0.00555636, 0.01510375, 0.04105626], [0.11160249, 0.00204407, 0.82463706]], dtype=F64),
        atol=1e-8,
        rtol=0,
    )
    assert naive_softmax(notes).sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(softmax(notes).sum(1), torch.ones(2, dtype=F64))
    large = torch.tensor([[1000.0, 999.0]], dtype=F64)
    assert torch.isnan(naive_softmax(large)).all()
    torch.testing.assert_close(softmax(large), F.softmax(large, dim=1))


def test_cross_entropy_and_its_gradient_match_torch() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 10, generator=gen, dtype=F64) * 5
    labels = torch.randint(0, 10, (8,), generator=gen)
    loss, grad = cross_entropy(logits, labels)
    x = logits.clone().requires_grad_(True)
    want = F.cross_entropy(x, labels)
    want.backward()
    torch.testing.assert_close(loss, want.detach(), **TOL)
    torch.testing.assert_close(grad, x.grad, **TOL)
    with pytest.raises(ValueError, match="do not match"):
        cross_entropy(logits, labels[:3])


def layer_vs_torch(layer, module: nn.Module, x: torch.Tensor) -> None:
    """Forward output, input gradient and weight gradients of `layer` equal `module`'s."""
    grad_out = torch.randn_like(module(x))
    y = layer.forward(x)
    grad_x = layer.backward(grad_out)
    xt = x.clone().requires_grad_(True)
    want = module(xt)
    (want * grad_out).sum().backward()
    torch.testing.assert_close(y, want.detach(), **TOL)
    torch.testing.assert_close(grad_x, xt.grad, **TOL)
    torch_grads = [p.grad for p in module.parameters()]
    for p, g in zip(layer.parameters(), torch_grads):
        torch.testing.assert_close(p.grad, g.T if isinstance(layer, Dense) and g.ndim == 2 else g, **TOL)


@pytest.mark.parametrize("activation", ["identity", "relu", "sigmoid", "softmax"])
def test_dense_matches_linear(activation: str) -> None:
    torch.manual_seed(2)
    linear = nn.Linear(7, 4).double()
    module = (
        nn.Sequential(linear, nn.Softmax(dim=1))
        if activation == "softmax"
        else (nn.Sequential(linear, {"identity": nn.Identity, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}[activation]()))
    )
    dense = Dense(7, 4, activation, dtype=F64)
    dense.W.value, dense.b.value = linear.weight.detach().T.clone(), linear.bias.detach().clone()
    layer_vs_torch(dense, module, torch.randn(5, 7, dtype=F64))


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1)])
def test_conv2d_layer_matches_nn_conv2d(stride: int, padding: int) -> None:
    torch.manual_seed(3)
    module = nn.Conv2d(3, 4, 3, stride=stride, padding=padding).double()
    layer = from_torch(nn.Sequential(module))
    layer_vs_torch(layer, module, torch.randn(2, 3, 9, 8, dtype=F64))


@pytest.mark.parametrize("kernel,stride", [(2, None), (3, 2), (3, 1)])
def test_max_pool_layer_matches_nn_max_pool(kernel: int, stride: int | None) -> None:
    torch.manual_seed(4)
    layer_vs_torch(MaxPool2d(kernel, stride), nn.MaxPool2d(kernel, stride), torch.randn(2, 3, 9, 8, dtype=F64))


def test_flatten_round_trips_the_shape() -> None:
    x = torch.randn(2, 3, 4, dtype=F64)
    flat = Flatten()
    assert flat.forward(x).shape == (2, 12)
    assert flat.backward(torch.ones(2, 12, dtype=F64)).shape == x.shape


@pytest.mark.parametrize(
    "make",
    [
        lambda: MLP((1, 8, 8), 5, hidden=[6, 4], activation="elu"),
        lambda: CNN((1, 8, 8), 3, channels=[2, 3], kernel_size=3, dense=[5], batch_norm=False, dropout=0.0),
    ],
)
def test_whole_network_copy_matches_autograd(make) -> None:
    """A visionlab model copied by from_torch: same logits, same weight gradients."""
    torch.manual_seed(5)
    net = make().double()
    hand = from_torch(net)
    x, y = torch.randn(4, 1, 8, 8, dtype=F64), torch.tensor([0, 1, 2, 0])
    _, grad = cross_entropy(hand.forward(x), y)
    hand.backward(grad)
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    torch.testing.assert_close(hand.forward(x), net(x).detach(), **TOL)
    for p, (name, q) in zip(hand.parameters(), net.named_parameters()):
        want = q.grad.T if p.grad.shape != q.grad.shape else q.grad
        torch.testing.assert_close(p.grad, want, **TOL, msg=name)


def test_from_torch_names_what_it_cannot_copy() -> None:
    with pytest.raises(ValueError, match="BatchNorm1d has no by-hand version"):
        from_torch(MLP((1, 4, 4), 3, hidden=[4], batch_norm=True))
    with pytest.raises(ValueError, match="must follow a Linear or Conv2d"):
        from_torch(nn.Sequential(nn.ReLU()))


def test_finite_differences_agree_with_backprop() -> None:
    """Nudge every weight of a tiny conv + dense network both ways: the loss changes by
    what the hand-written gradients predict."""
    gen = torch.Generator().manual_seed(6)
    net = Sequential(
        [
            Conv2d(1, 2, 3, padding=1, activation="tanh", generator=gen, dtype=F64),
            MaxPool2d(2),
            Flatten(),
            Dense(8, 5, "sigmoid", generator=gen, dtype=F64),
            Dense(5, 3, generator=gen, dtype=F64),
        ]
    )
    for p in net.parameters():  # non-zero biases so their gradients are tested too
        p.value += 0.1 * torch.randn(p.value.shape, generator=gen, dtype=F64)
    x, y = torch.randn(3, 1, 4, 4, generator=gen, dtype=F64), torch.tensor([0, 2, 1])
    _, grad = cross_entropy(net.forward(x), y)
    net.backward(grad)
    eps = 1e-6
    for p in net.parameters():
        numeric = torch.zeros_like(p.value)
        for i in range(p.value.numel()):
            flat = p.value.view(-1)
            keep = flat[i].item()
            flat[i] = keep + eps
            up = cross_entropy(net.forward(x), y)[0]
            flat[i] = keep - eps
            down = cross_entropy(net.forward(x), y)[0]
            flat[i] = keep
            numeric.view(-1)[i] = (up - down) / (2 * eps)
        torch.testing.assert_close(p.grad, numeric, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_steps_give_torch_optim_sgd_weights(momentum: float) -> None:
    """Same MLP, same batch: after each of three steps the by-hand weights equal
    torch.optim.SGD's."""
    torch.manual_seed(7)
    net = MLP((1, 6, 6), 4, hidden=[8, 5]).double()
    hand = from_torch(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.3, momentum=momentum)
    hand_opt = SGD(hand.parameters(), lr=0.3, momentum=momentum)
    x, y = torch.randn(10, 1, 6, 6, dtype=F64), torch.randint(0, 4, (10,))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        hand.backward(cross_entropy(hand.forward(x), y)[1])
        hand_opt.step()
        for p, q in zip(hand.parameters(), net.parameters()):
            torch.testing.assert_close(p.value, q.detach().T if q.ndim == 2 else q.detach(), **TOL)


def test_sgd_rejects_bad_settings_and_missing_gradients() -> None:
    layer = Dense(2, 2)
    with pytest.raises(ValueError, match="lr=0"):
        SGD(layer.parameters(), lr=0)
    with pytest.raises(ValueError, match="momentum=1"):
        SGD(layer.parameters(), lr=0.1, momentum=1)
    with pytest.raises(ValueError, match="call backward"):
        SGD(layer.parameters(), lr=0.1).step()


def test_batch_generator_covers_every_sample_once_per_epoch() -> None:
    images, labels = torch.arange(10).view(10, 1), torch.arange(10)
    gen = BatchGenerator(images, labels, batch_size=4, seed=3)
    assert len(gen) == 3
    epochs = []
    for epoch in range(2):
        batches = list(gen.epoch(epoch))
        assert [len(y) for _, y in batches] == [4, 4, 2]
        seen = torch.cat([y for _, y in batches])
        assert sorted(seen.tolist()) == list(range(10))
        assert all(torch.equal(x.view(-1), y) for x, y in batches)  # images stay with labels
        epochs.append(seen)
    assert not torch.equal(epochs[0], epochs[1])  # reshuffled each epoch
    assert torch.equal(torch.cat([y for _, y in BatchGenerator(images, labels, 4, shuffle=False).epoch(0)]), labels)
    with pytest.raises(ValueError, match="batch_size=0"):
        BatchGenerator(images, labels, batch_size=0)
    with pytest.raises(ValueError, match="10 images but 9 labels"):
        BatchGenerator(images, labels[:9])


def test_batch_generator_serves_memory_loaders_batches() -> None:
    """The by-hand network and visionlab see the same batches, in the same order."""
    images = torch.randint(0, 256, (50, 1, 2, 2), dtype=torch.uint8)
    labels = torch.arange(50)
    gen = BatchGenerator(images, labels, batch_size=8, seed=11)
    for epoch in range(3):
        loader = MemoryLoader(
            images,
            labels,
            8,
            BatchTransform((0.0,), (1.0,)),
            shuffle=True,
            seed=11,
            env=lambda epoch=epoch: LoaderEnv(epoch=epoch),
        )
        theirs = [y for _, y in loader]
        ours = [y for _, y in gen.epoch(epoch)]
        assert len(theirs) == len(ours) and all(torch.equal(a, b) for a, b in zip(theirs, ours))
