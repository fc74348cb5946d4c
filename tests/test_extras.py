"""The install split (issue #29): `make train` installs what training needs; a command that
needs an extra that is not installed stops in one line naming the pip install, before it
writes anything. A missing package is simulated by a None in sys.modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_main
from visionlab.utils.extras import MissingExtra, need

# What visionlab imports of the extras (pyproject.toml); a fresh `pip install -e .` has none of them.
EXTRA_ONLY = ("onnx", "onnxscript", "onnxruntime", "captum", "litdata", "optuna", "mlflow", "litserve", "timm")


def test_need_names_the_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("captum", "captum.attr"):  # as if never installed, also where a test imported it already
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(
        MissingExtra,
        match=r"^explain=gradcam needs captum, which is not installed: "
        r"pip install -e '\.\[explain\]'",
    ):
        need("captum.attr", "explain", "explain=gradcam")


def test_need_shows_a_broken_package_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed package that fails to import for its own reasons is not a missing extra."""
    (tmp_path / "broken_extra").mkdir()
    (tmp_path / "broken_extra" / "__init__.py").write_text("import not_a_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="not_a_module_anywhere"):
        need("broken_extra", "export", "format=onnx")


@pytest.mark.parametrize(
    "entry,args,hidden,extra",
    [
        ("export", ["format=onnx"], "onnxscript", "export"),
        ("predict", ["predict.from_test=2", "explain=gradcam"], "captum", "explain"),
        ("train", ["data=image_folder", "data.loader=stream"], "litdata", "stream"),
    ],
)
def test_a_missing_extra_stops_the_command_in_one_line(
    entry: str, args: list[str], hidden: str, extra: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib import import_module

    main = import_module(f"visionlab.entrypoints.{entry}").main
    monkeypatch.setitem(sys.modules, hidden, None)
    run_dir = tmp_path / "run"
    place = [f"ckpt_path={tmp_path / 'model.ckpt'}"] if entry != "train" else [f"data.root={tmp_path}"]
    code, err = run_main(main, [*place, *args, f"hydra.run.dir={run_dir}"])
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: {args[-1]} needs {hidden}, which is not installed: "
        f"pip install -e '.[{extra}]' (from PyPI: pip install 'visionlab[{extra}]')"
    ]
    assert not run_dir.exists(), "the command wrote before it stopped"


def test_the_commands_of_a_training_install_import_without_the_extras() -> None:
    """What `pip install -e .` gives: every command's module imports with the extras' packages absent."""
    code = (
        "import sys\n"
        f"for name in {EXTRA_ONLY!r}: sys.modules[name] = None\n"
        "import visionlab.entrypoints.train, visionlab.entrypoints.evaluate, visionlab.entrypoints.predict\n"
        "import visionlab.entrypoints.export, visionlab.entrypoints.lr_find, visionlab.entrypoints.report\n"
        "import visionlab.entrypoints.scratch, visionlab.serve.server, visionlab.data\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
