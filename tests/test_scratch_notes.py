"""The notes' neuron and four-sample network, reproduced by visionlab.scratch.notes."""

from __future__ import annotations

import numpy as np
import torch

from visionlab.scratch.activations import sigmoid, sigmoid_grad
from visionlab.scratch.notes import NOTES_X, NOTES_Y, Neuron, notes_network


def test_neuron_gives_the_notes_output() -> None:
    neuron = Neuron(torch.tensor([0.0, 2.0], dtype=torch.float64), 4)
    assert neuron.feedforward(torch.tensor([2.0, 3.0], dtype=torch.float64)).item() == 0.9999546021312976


def test_notes_network_reaches_the_notes_outputs() -> None:
    """The notes' loop run verbatim in NumPy and the by-hand version agree, and both end at
    the outputs of the tutorial the notes cite (iamtrask, 'A neural network in 11 lines')."""
    weights, outputs = notes_network()
    np.random.seed(1)  # the notes' code, as written there
    syn0 = 2 * np.random.random((3, 1)) - 1
    X, y = NOTES_X.numpy(), NOTES_Y.numpy()
    for _ in range(10_000):
        l1 = 1 / (1 + np.exp(-np.dot(X, syn0)))
        syn0 += np.dot(X.T, (y - l1) * (l1 * (1 - l1)))
    torch.testing.assert_close(outputs, torch.from_numpy(l1), atol=1e-12, rtol=0)
    torch.testing.assert_close(weights, torch.from_numpy(syn0), atol=1e-9, rtol=0)
    published = torch.tensor([[0.00966449], [0.00786506], [0.99358898], [0.99211957]], dtype=torch.float64)
    torch.testing.assert_close(outputs, published, atol=1e-8, rtol=0)
    assert torch.equal(outputs.round(), NOTES_Y)


def test_notes_update_is_gradient_descent_on_half_the_squared_error() -> None:
    """syn0 += X.T @ ((y - out) * sigmoid'(z)) is minus the autograd gradient of
    0.5 * sum((y - sigmoid(X @ w))^2): a gradient step with learning rate 1."""
    w = torch.tensor([[0.3], [-0.2], [0.1]], dtype=torch.float64, requires_grad=True)
    (0.5 * ((NOTES_Y - sigmoid(NOTES_X @ w)) ** 2).sum()).backward()
    z = NOTES_X @ w.detach()
    by_hand = NOTES_X.T @ ((NOTES_Y - sigmoid(z)) * sigmoid_grad(z))
    torch.testing.assert_close(by_hand, -w.grad)
