"""Fine-tuning schedule: train the head of a frozen backbone first, then the whole net."""

from __future__ import annotations

import logging

from lightning import Callback, LightningModule, Trainer

log = logging.getLogger("visionlab")


class BackboneUnfreeze(Callback):
    """Unfreezes `task.net`'s backbone at the start of epoch `unfreeze_at_epoch` (0-based:
    after that many epochs). The backbone's parameters are already in the optimizer, in
    their own group with the lower learning rate (`model.backbone_lr_scale`), so from then
    on they train at that rate. Does nothing for nets without a frozen backbone, or when
    `unfreeze_at_epoch` is None. Checked at every epoch start, so a resumed run unfreezes too.
    """

    def __init__(self, unfreeze_at_epoch: int | None = None) -> None:
        if unfreeze_at_epoch is not None and (not isinstance(unfreeze_at_epoch, int) or unfreeze_at_epoch < 0):
            raise ValueError(f"finetune.unfreeze_at_epoch={unfreeze_at_epoch!r} must be an integer >= 0 or null")
        self.unfreeze_at_epoch = unfreeze_at_epoch

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        net = getattr(pl_module, "net", None)
        if self.unfreeze_at_epoch is None or not getattr(net, "frozen", False):
            return
        if trainer.current_epoch >= self.unfreeze_at_epoch:
            net.unfreeze_backbone()
            log.info("epoch %d: backbone unfrozen (lr scale %s)", trainer.current_epoch,
                     getattr(net, "backbone_lr_scale", 1.0))
