"""Hydra sweeper plugin: visionlab's Optuna search (`hydra/sweeper=visionlab_optuna`)."""
