"""Cross-entropy on class scores, with its gradient."""

from __future__ import annotations

import torch
from torch import Tensor


def cross_entropy(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy of softmax(logits) against integer `labels`, and its gradient
    with respect to the logits.

    Softmax and log are fused (log-softmax = z - log sum e^z, with z shifted by the row
    max) so no probability underflows to 0 before the log. The gradient is the classic
    (softmax(logits) - one_hot(labels)) / batch size.
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    z = logits - logits.amax(dim=1, keepdim=True)
    log_probs = z - torch.log(torch.exp(z).sum(dim=1, keepdim=True))
    rows = torch.arange(len(labels), device=logits.device)
    loss = -log_probs[rows, labels].mean()
    grad = torch.exp(log_probs)
    grad[rows, labels] -= 1.0
    return loss, grad / len(labels)
