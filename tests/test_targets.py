"""visionlab.utils.targets: one resolver, the allow-lists as data; a refused name is never imported."""

import sys

import pytest
from torch import nn

from visionlab.utils.targets import (
    COMPONENTS,
    MODELS,
    NO_CLASS,
    NOT_A_CLASS,
    NOT_ALLOWED,
    RUN_FOLDER,
    AllowList,
    TargetError,
    resolve_target,
)


@pytest.mark.parametrize(
    ("target", "allowed", "problem"),
    [
        ("visionlab.models.mlp.MLP", MODELS, None),
        ("visionlab.models.MLP", MODELS, None),
        ("torch.optim.AdamW", RUN_FOLDER, None),
        ("visionlab.data.synthetic.SyntheticDataModule", COMPONENTS, None),
        ("torch.optim.AdamW", MODELS, NOT_ALLOWED),
        ("os.system", RUN_FOLDER, NOT_ALLOWED),
        ("visionlab..models.MLP", RUN_FOLDER, NOT_ALLOWED),
        ("", MODELS, NOT_ALLOWED),
        (["visionlab.models.MLP"], RUN_FOLDER, NOT_ALLOWED),
        ("visionlab.models.gone.Net", MODELS, NO_CLASS),
        ("visionlab.models.mlp.Nothing", MODELS, NO_CLASS),
        ("visionlab.models.mlp.nn", MODELS, NOT_A_CLASS),  # a module, not a class
        ("visionlab.models.tta.tta_scores", MODELS, NOT_A_CLASS),
        ("visionlab.data.synthetic.SyntheticDataModule", AllowList(("visionlab.",), base=nn.Module), NOT_A_CLASS),
    ],
)
def test_resolve_target(target, allowed, problem):
    if problem is None:
        assert isinstance(resolve_target(target, allowed), type)
        return
    with pytest.raises(TargetError) as err:
        resolve_target(target, allowed)
    assert err.value.problem == problem


def test_a_refused_name_is_not_imported():
    assert "this_module_must_not_load" not in sys.modules
    with pytest.raises(TargetError):
        resolve_target("this_module_must_not_load.Evil", RUN_FOLDER)
    assert "this_module_must_not_load" not in sys.modules


def test_an_allow_list_reads_as_its_packages():
    assert str(MODELS) == "visionlab.models"
