"""Lightning callbacks that the configs' `callbacks` group can name."""

from visionlab.callbacks.tensorboard import (
    ConvFilters,
    EpochTimer,
    Histograms,
    HParamsMetric,
    ModelGraph,
    ValidationImages,
)

__all__ = ["ConvFilters", "EpochTimer", "HParamsMetric", "Histograms", "ModelGraph", "ValidationImages"]
