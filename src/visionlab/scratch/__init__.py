"""By hand: the notes' from-scratch network and convolution in plain tensor code.

No autograd, no nn.Module, no Lightning: activations with their derivatives, Dense and
Conv2d layers with hand-written backward passes, a Sequential, cross-entropy with its
gradient, SGD with momentum and a BatchGenerator. tests/test_scratch*.py check each piece
against torch.nn / autograd, and `python scripts/scratch.py` trains the notes' MLP with it
next to the same model trained by visionlab.
"""

from visionlab.scratch.activations import ACTIVATIONS, naive_softmax, softmax
from visionlab.scratch.conv import conv2d, conv2d_backward, convolve2d, correlate2d, max_pool2d, max_pool2d_backward
from visionlab.scratch.data import BatchGenerator
from visionlab.scratch.layers import Conv2d, Dense, Flatten, MaxPool2d, Parameter, Sequential, from_torch
from visionlab.scratch.losses import cross_entropy
from visionlab.scratch.optim import SGD

__all__ = [
    "ACTIVATIONS",
    "BatchGenerator",
    "Conv2d",
    "Dense",
    "Flatten",
    "MaxPool2d",
    "Parameter",
    "SGD",
    "Sequential",
    "conv2d",
    "conv2d_backward",
    "convolve2d",
    "correlate2d",
    "cross_entropy",
    "from_torch",
    "max_pool2d",
    "max_pool2d_backward",
    "naive_softmax",
    "softmax",
]
