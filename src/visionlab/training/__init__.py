"""The training runtime: the LightningModule, its callbacks and loggers, checkpoints,
preemption and fine-tuning. Knows Lightning, not Hydra; imports nothing from app/ or entrypoints/."""
