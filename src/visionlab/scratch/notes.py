"""The notes' first networks, reproduced with the by-hand pieces: one neuron, and the
'two-layer' network (input layer plus one sigmoid output layer, no bias) trained on four
samples by the hand-written update `syn0 += l0.T @ (error * sigmoid'(l1))`."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from visionlab.scratch.activations import sigmoid, sigmoid_grad

# The notes' dataset: the output is the first input column; the third is always 1 (a bias).
NOTES_X = torch.tensor([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=torch.float64)
NOTES_Y = torch.tensor([[0, 0, 1, 1]], dtype=torch.float64).T


class Neuron:
    """sigmoid(weights . inputs + bias): the notes' single neuron."""

    def __init__(self, weights: Tensor, bias: float) -> None:
        self.weights, self.bias = weights, bias

    def feedforward(self, inputs: Tensor) -> Tensor:
        return sigmoid(torch.dot(self.weights, inputs) + self.bias)


def notes_network(iterations: int = 10_000, seed: int = 1) -> tuple[Tensor, Tensor]:
    """Train the notes' network; returns (weights, outputs of the last forward pass).

    The initial weights are the notes' `2 * np.random.random((3, 1)) - 1` after
    `np.random.seed(seed)`, so the run matches theirs number for number. The update is
    gradient descent with learning rate 1 on half the *summed* squared error: its
    gradient with respect to the weights is -l0.T @ ((y - l1) * sigmoid'(z)).
    """
    weights = torch.from_numpy(2 * np.random.RandomState(seed).random_sample((3, 1)) - 1)
    outputs = NOTES_Y
    for _ in range(iterations):
        z = NOTES_X @ weights
        outputs = sigmoid(z)
        delta = (NOTES_Y - outputs) * sigmoid_grad(z)
        weights = weights + NOTES_X.T @ delta
    return weights, outputs
