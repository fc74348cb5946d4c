"""Test-time augmentation: a net's class probabilities averaged over views of each image.
`flip` adds the horizontal mirror (the view flip augmentation trained on), which the
airbench CIFAR-10 speedruns use for a cheap gain at test time."""

from __future__ import annotations

import torch
from torch import Tensor, nn

TTA_MODES = ("none", "flip")


def tta_scores(net: nn.Module, x: Tensor, mode: str = "none") -> Tensor:
    """Class scores of `x` whose softmax is the prediction: the net's logits for `none`; for
    `flip` the log of the mean of the probabilities on x and on its mirror (one forward pass
    of both), so softmax and cross-entropy read them as the averaged probabilities."""
    if mode == "none":
        return net(x)
    if mode != "flip":
        raise ValueError(f"tta={mode!r} is unknown; allowed: {', '.join(TTA_MODES)}")
    both = net(torch.cat((x, x.flip(-1)))).float().softmax(1)
    plain, mirrored = both.chunk(2)
    return ((plain + mirrored) / 2).log()
