"""Every shell command of README.md and docs/ runs (issue #29: docs that cannot go stale).

The commands are the lines of the fenced ```bash blocks (continuation lines joined, comments
stripped, each distinct command once across pages: the Portuguese pages repeat the English
ones). A block whose previous line is `<!-- not-run: REASON -->` is listed, not run. Each
Hydra command runs in this process, as `main()` of its script with `debug=fast` appended
(conf/debug/fast.yaml), in one shared folder that stands for the user's checkout: `outputs/`
collects the runs, so `report.py outputs/runs` and `ckpt_path=last` find them. CKPT and RUN
stand for the last checkpoint and the folder of one short run made first. Two limits are the
test's own: an Optuna search runs 2 trials and the joblib launcher 1 job at a time.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from visionlab.app.hydra_seams import args_parser

REPO = Path(__file__).resolve().parents[1]
MAX_NOT_RUN = 15
NOT_RUN = re.compile(r"^<!--\s*not-run:(.*?)-->$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*(\S*)")
# Names a command had before #30's rename: the docs use the new ones, the scripts may not yet.
OLD_NAMES = {"evaluate": "eval"}
# Limits of the test's own where debug=fast cannot reach, Hydra's sweeper and launcher: with
# the first override of a command, the second is set (replacing the command's own value).
SHORTER = {"hparams_search=": "hydra.sweeper.n_trials=2", "launcher=joblib": "hydra.launcher.n_jobs=1"}
# DDP starts its other ranks by running the script again: such a command runs as a process.
OWN_PROCESS = re.compile(r"^(trainer=ddp|trainer\.strategy=ddp)")
# Programs that serve until stopped: a page may show them unmarked; their --help is run instead.
SERVERS = {("tensorboard",), ("mlflow", "ui"), ("optuna-dashboard",)}


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    page: str
    line: int
    block: int  # the line of its block's fence
    not_run: str | None  # the marker's reason

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}: `{shlex.join(self.words)}`"


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def commands_of(path: Path) -> Iterator[Command]:
    """The commands of the ```bash blocks of one page."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page, previous, i = str(path.relative_to(REPO)), "", 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            previous = lines[i].strip() or previous
            i += 1
            continue
        marker, language = NOT_RUN.match(previous), fence.group(3).lower()
        start, i = i + 1, i + 1
        body: list[tuple[int, str]] = []
        while i < len(lines) and not lines[i].strip().startswith(fence.group(2)):
            body.append((i + 1, lines[i]))
            i += 1
        i, previous = i + 1, ""
        if language not in ("bash", "sh", "shell", "console"):
            continue
        reason = marker.group(1).strip() if marker else None
        for line, text in joined(body):
            words = shlex.split(text.removeprefix("$ "), comments=True)
            if words:
                yield Command(tuple(words), page, line, start, reason)


def joined(body: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """The block's lines with backslash continuations joined, each with its first line number."""
    text, first = "", 0
    for number, line in body:
        first = first or number
        if line.rstrip().endswith("\\") and not line.lstrip().startswith("#"):
            text += line.rstrip()[:-1] + " "
            continue
        yield first, text + line
        text, first = "", 0
    if text:
        yield first, text


def all_commands() -> list[Command]:
    """Each distinct command once, at its first page and line; run if any page shows it unmarked."""
    seen: dict[tuple[str, ...], Command] = {}
    for path in pages():
        for command in commands_of(path):
            first = seen.get(command.words)
            if first is None or (first.not_run is not None and command.not_run is None):
                seen[command.words] = command
    return list(seen.values())


COMMANDS = all_commands()
TO_RUN = [c for c in COMMANDS if c.not_run is None]


# --- how a command runs ---------------------------------------------------------------------


def script_module(name: str) -> str | None:
    """The module whose main() scripts/NAME.py runs (the old name while #30's rename is pending)."""
    for candidate in (name, OLD_NAMES.get(name)):
        script = REPO / "scripts" / f"{candidate}.py"
        if candidate and script.is_file():
            found = re.search(r"^from (visionlab[\w.]*) import main$", script.read_text(), re.M)
            return found.group(1) if found else None
    return None


def console_scripts() -> dict[str, str]:
    """visionlab-* console command -> module, from [project.scripts] of pyproject.toml."""
    table = (REPO / "pyproject.toml").read_text().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^(visionlab-[\w-]+)\s*=\s*"([\w.]+):main"', table, re.M))


def entry(program: tuple[str, ...]) -> tuple[str, str] | None:
    """(command name, module) of `python scripts/NAME.py` or `visionlab-NAME`, else None."""
    if len(program) >= 2 and program[0] in ("python", "python3") and program[1].startswith("scripts/"):
        name = Path(program[1]).stem
        module = script_module(name)
    elif program and program[0].startswith("visionlab-"):
        name = program[0].removeprefix("visionlab-").replace("-", "_")
        consoles = console_scripts()
        module = consoles.get(program[0]) or consoles.get(f"visionlab-{OLD_NAMES.get(name, '')}") or script_module(name)
    else:
        return None
    return (name, module) if module else None


def is_hydra(name: str) -> bool:
    """Hydra commands have an entry config in conf/ (train, evaluate, ...); tools parse argv."""
    return (REPO / "conf" / f"{name}.yaml").is_file()


def run_main(module: str, argv: list[str]) -> tuple[int, str]:
    """main() of `module` in this process with `argv`: (exit status, its output)."""
    GlobalHydra.instance().clear()
    out = io.StringIO()
    saved = sys.argv
    sys.argv = [module, *argv]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            result = import_module(module).main()
        code = result if isinstance(result, int) else 0
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else (0 if exit_info.code is None else 1)
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()
    return code, out.getvalue()


def run_process(name: str, argv: list[str]) -> tuple[int, str]:
    """scripts/NAME.py (the old name while the rename is pending) as its own process."""
    script = next(
        REPO / "scripts" / f"{n}.py"
        for n in (name, OLD_NAMES.get(name))
        if n and (REPO / "scripts" / f"{n}.py").is_file()
    )
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    done = subprocess.run(
        [sys.executable, str(script), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": path},
        cwd=os.getcwd(),
    )
    return done.returncode, done.stdout + done.stderr


def with_debug_fast(argv: list[str]) -> list[str]:
    """Hydra's flags, then the overrides with the test's limits and `debug=fast` last (Hydra's
    parser takes the overrides in one run: `model=mlp --cfg job debug=fast` would be refused)."""
    overrides = list(args_parser().parse_args(argv).overrides)
    flags = list(argv)
    for token in overrides:
        flags.remove(token)
    for key, limit in SHORTER.items():
        if any(a.startswith(key) for a in overrides):
            overrides = [a for a in overrides if a.split("=")[0] != limit.split("=")[0]] + [limit]
    return [*flags, *overrides, "debug=fast"]


def globbed(words: list[str]) -> list[str]:
    """The words as the shell gives them: a pattern that matches files becomes those files."""
    return [m for w in words for m in (sorted(glob.glob(w)) if glob.has_magic(w) and glob.glob(w) else [w])]


def substituted(words: tuple[str, ...], places: dict[str, str]) -> list[str]:
    """The words with the placeholders CKPT, RUN and PATH replaced by the shared run's files
    and a small image folder."""
    pattern = re.compile(r"\b(" + "|".join(places) + r")\b")
    return [pattern.sub(lambda m: places[m.group(1)], w) for w in words]


def split_env(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """`VAR=value cmd ...` -> ({VAR: value}, [cmd, ...])."""
    env = {}
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    return env, words


@dataclass
class Workspace:
    folder: Path
    places: dict[str, str]

    def next_second(self) -> None:
        """Wait while a folder of this second exists: a run's folder is named by the second it
        started (outputs/runs/DATE/TIME, outputs/predict/DATE/TIME, ...), and a quick command must not find
        an earlier one's there. The earlier commands have all ended, so no later second is taken."""
        while True:
            now = datetime.datetime.now()
            stamp = f"{now:%Y-%m-%d}/{now:%H-%M-%S}"
            if not any((self.folder / "outputs").glob(f"*/{stamp}")):
                return
            time.sleep(1.0 - now.microsecond / 1e6)


def checkout(folder: Path) -> None:
    """A stand-in for the user's checkout in `folder`: the repository's folders linked, its
    files and docs/ copied (a command may write there), and an empty outputs/."""
    for entry in REPO.iterdir():
        if entry.name in ("outputs", ".git", ".venv") or entry.name.endswith("_cache"):
            continue
        if entry.is_dir() and entry.name != "docs":
            (folder / entry.name).symlink_to(entry)
        elif entry.is_dir():
            shutil.copytree(entry, folder / entry.name)
        else:
            shutil.copy2(entry, folder / entry.name)


def user_images(folder: Path) -> None:
    """The user's own images the pages name: shoe.png and photos/ beside the checkout, and PATH
    (images/), a folder of one sub-folder per class as data=image_folder reads it."""
    rng = np.random.default_rng(0)

    def image(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(path)

    image(folder / "shoe.png")
    for i in range(2):
        image(folder / "photos" / f"{i}.png")
    for label in ("boot", "shirt", "bag"):
        for i in range(12):
            image(folder / "images" / label / f"{i}.png")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """The user's checkout (the cwd and VISIONLAB_ROOT of every command), with one short run
    whose last checkpoint and folder stand for CKPT and RUN."""
    folder = tmp_path_factory.mktemp("user")
    checkout(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("VISIONLAB_ROOT", str(folder))
        user_images(folder)
        run = folder / "shared_run"  # not under outputs/runs: `ckpt_path=last` finds the docs' own runs
        code, output = run_main(script_module("train") or "", ["debug=fast", f"hydra.run.dir={run}"])
        assert code == 0, output[-3000:]
        places = {"CKPT": str(run / "checkpoints" / "last.ckpt"), "RUN": str(run), "PATH": str(folder / "images")}
        yield Workspace(folder, places)


def run_command(command: Command, workspace: Workspace, mp: pytest.MonkeyPatch) -> None:
    env, words = split_env(globbed(substituted(command.words, workspace.places)))
    for key, value in env.items():
        mp.setenv(key, value)
    if words[:2] == ["make", "train"]:  # `make train ARGS="..."`: the script with those overrides
        args = next((w.split("=", 1)[1] for w in words[2:] if w.startswith("ARGS=")), "")
        words = ["python", "scripts/train.py", *shlex.split(args)]
    found = entry(tuple(words[:2]))
    if found is not None:
        name, module = found
        argv = words[2:] if words[0].startswith("python") else words[1:]
        if is_hydra(name):
            argv = with_debug_fast(argv)
        elif name == "speedrun" and argv[:1] == ["run"]:  # the runner passes overrides on to train
            argv = [*argv, "debug=fast"]
        own_process = any(OWN_PROCESS.match(a) for a in argv)
        code, output = run_process(name, argv) if own_process else run_main(module, argv)
        if code != 0:
            pytest.fail(f"{command.where} exited {code}:\n{output[-4000:]}", pytrace=False)
        return
    if words[0] == "make":  # other targets (test, docs, lint): the target exists and its recipe parses
        checked = ["make", "-n", *words[1:]]
    elif tuple(words[:2]) in SERVERS or tuple(words[:1]) in SERVERS:
        checked = [*words[: 2 if tuple(words[:2]) in SERVERS else 1], "--help"]
        checked[0] = str(Path(sys.executable).parent / checked[0])
    else:
        pytest.fail(
            f"{command.where}: not a command this test can run; put `<!-- not-run: REASON -->` on the "
            "line before its ```bash block",
            pytrace=False,
        )
    done = subprocess.run(checked, capture_output=True, text=True, timeout=120, cwd=workspace.folder)
    if done.returncode != 0:
        pytest.fail(
            f"{command.where}: `{shlex.join(checked)}` exited {done.returncode}:\n{done.stderr[-3000:]}", pytrace=False
        )


@pytest.mark.parametrize("command", TO_RUN, ids=[f"{c.page}:{c.line}" for c in TO_RUN])
def test_command_runs(command: Command, workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workspace.folder)
    workspace.next_second()
    run_command(command, workspace, monkeypatch)


def test_not_run_commands_are_few_and_say_why() -> None:
    skipped = [c for c in COMMANDS if c.not_run is not None]
    print(f"\n{len(skipped)} documented commands are not run:")
    for c in skipped:
        print(f"  {c.where}: {c.not_run}")
    assert all(c.not_run for c in skipped), [c.where for c in skipped if not c.not_run]
    blocks = {(c.page, c.block) for c in skipped}
    assert len(blocks) <= MAX_NOT_RUN, f"{len(blocks)} not-run blocks; at most {MAX_NOT_RUN}"


def test_readme_links_to_docs_exist() -> None:
    """Every link of README.md into docs/ names a file that exists."""
    links = re.findall(r"\]\((docs/[^)#\s]*)", (REPO / "README.md").read_text(encoding="utf-8"))
    missing = [link for link in links if not (REPO / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
