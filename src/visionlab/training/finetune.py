"""Fine-tuning schedule: train the head of a frozen backbone first, then the whole net."""

from __future__ import annotations

import logging
from typing import Any

from lightning import LightningModule
from lightning.pytorch.callbacks import BaseFinetuning
from torch.optim import Optimizer

from visionlab.utils.errors import ConfigError

log = logging.getLogger("visionlab")


class BackboneUnfreeze(BaseFinetuning):
    """Unfreezes `task.net`'s backbone at the start of epoch `unfreeze_at_epoch` (0-based:
    after that many epochs), through Lightning's BaseFinetuning hooks.

    The net freezes its own backbone (`model.freeze_backbone`) and puts it in the optimizer
    from the start, in its own group with the lower learning rate (`model.backbone_lr_scale`),
    so unfreezing only makes it trainable. Does nothing for nets without a frozen backbone,
    or when `unfreeze_at_epoch` is None. Checked at every epoch start, so a resumed run
    unfreezes too.
    """

    def __init__(self, unfreeze_at_epoch: int | None = None) -> None:
        if unfreeze_at_epoch is not None and (not isinstance(unfreeze_at_epoch, int) or unfreeze_at_epoch < 0):
            raise ConfigError(f"finetune.unfreeze_at_epoch={unfreeze_at_epoch!r} must be an integer >= 0 or null")
        super().__init__()
        self.unfreeze_at_epoch = unfreeze_at_epoch

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        """Nothing to do: the net is built frozen, so a checkpoint rebuilds it the same way."""

    def finetune_function(self, pl_module: LightningModule, epoch: int, optimizer: Optimizer) -> None:
        net = getattr(pl_module, "net", None)
        if self.unfreeze_at_epoch is None or not getattr(net, "frozen", False) or epoch < self.unfreeze_at_epoch:
            return
        assert net is not None  # `frozen` is an attribute of a net
        net.unfreeze_backbone()
        log.info("epoch %d: backbone unfrozen (lr scale %s)", epoch, getattr(net, "backbone_lr_scale", 1.0))

    def state_dict(self) -> dict[str, Any]:
        """No optimizer groups to re-create on resume: ours never change. (BaseFinetuning
        would restore the first epoch's groups, learning rates included, over the
        scheduler's.)"""
        return {"internal_optimizer_metadata": {}}
