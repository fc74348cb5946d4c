"""The private names of Optuna (and optuna-integration) visionlab uses, each reached through
one function here.

A search recovers trials a kill left RUNNING, and a trial's job finds its trial by number
(visionlab.app.search): Optuna's public API acts on trials of this process only, so these go
through the study's storage. tests/test_seams.py fails loudly when the pinned version
changes them.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from optuna_integration import PyTorchLightningPruningCallback


def set_stored_user_attr(study: optuna.Study, trial: FrozenTrial | optuna.Trial, key: str, value: Any) -> None:
    """Set a user attribute of any trial of `study`, whichever process runs it."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


def stored_user_attrs(study: optuna.Study, trial: FrozenTrial | optuna.Trial) -> dict[str, Any]:
    """A trial's user attributes as stored now (set by its job, maybe in another process)."""
    return dict(study._storage.get_trial_user_attrs(trial._trial_id))


def mark_failed(study: optuna.Study, trial: FrozenTrial) -> None:
    """Mark a RUNNING trial of an earlier process FAIL."""
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def trial_of_number(study: optuna.Study, number: int) -> optuna.Trial:
    """The trial numbered `number` of `study`, to report to from the job that runs it."""
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.Trial(study, trial_id)


def pruned_trial(callback: PyTorchLightningPruningCallback) -> optuna.Trial:
    """The trial optuna-integration's pruning callback reports to."""
    trial: optuna.Trial = callback._trial
    return trial
