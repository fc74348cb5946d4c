"""Plain `nn.Module` classifiers: no Lightning, no Hydra, no data code."""

from visionlab.models.activations import ACTIVATIONS, make_activation
from visionlab.models.backbones import BACKBONES, Backbone
from visionlab.models.cnn import CNN
from visionlab.models.init import INITS, initialize
from visionlab.models.mlp import MLP

__all__ = ["ACTIVATIONS", "BACKBONES", "Backbone", "CNN", "INITS", "MLP", "initialize", "make_activation"]
