"""visionlab: image classifiers in PyTorch, trained with Lightning, configured with Hydra."""

__version__ = "0.1.0"
