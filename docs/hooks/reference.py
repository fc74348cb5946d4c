"""MkDocs hook: the reference pages, generated at build time from what the code itself reads.

A page holds a marker line, `<!-- reference: config -->` or `<!-- reference: commands -->`,
that this hook replaces (English and Portuguese builds alike):

- config: every group of conf/ and each option's keys with the default its YAML sets, the
  comment beside it, and what is allowed, from the `CHECKS` of the component its `_target_`
  names (visionlab.utils.checks), the Trainer flags' table (training/trainer_flags.py) and
  the task's checks of the optimizer and scheduler groups. Options of the global package
  (experiments, searches, launchers) are shown as their YAML.
- commands: each Hydra command's --help, rendered from its conf/hydra/help template as
  Hydra renders it, and the table of its entry config's own keys; the --help of every other
  script in scripts/ (argparse), run in this process.

Nothing here is typed twice: a new option, check or command appears on the next build.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import io
import re
import runpy
import string
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(ROOT / "src"))  # this checkout's visionlab, before any installed copy
MARKER = re.compile(r"^<!-- reference: (\w+) -->$", re.MULTILINE)
GLOBAL = "# @package _global_"


def on_page_markdown(markdown: str, **_: Any) -> str:
    return MARKER.sub(lambda m: PAGES[m.group(1)](), markdown)


# ---------------------------------------------------------------- config groups


def _groups() -> list[str]:
    """Every folder of conf/ holding YAML options, as Hydra names the group (`callbacks/weight_averaging`)."""
    dirs = {p.parent.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml") if p.parent != CONF}
    return sorted(d for d in dirs if not d.startswith("hydra"))


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _header(path: Path) -> str:
    """The comment block at the top of a YAML file: what the option is for."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if line.strip() != GLOBAL:
            lines.append(line.lstrip("#").strip())
    return " ".join(line for line in lines if line)


def _comments(path: Path) -> dict[str, str]:
    """Dotted key -> the comment written after it on its line (indentation gives the nesting),
    in the file and in the files of its group that its defaults list merges into it."""
    found: dict[str, str] = {}
    for include in re.findall(r"^  - ([\w/]+?)(?:@_here_)?\s*(?:#.*)?$", path.read_text(), re.MULTILINE):
        if (included := path.parent / f"{include}.yaml").is_file() and include != "_self_":
            found |= _comments(included)
    stack: list[tuple[int, str]] = []
    for line in path.read_text().splitlines():
        m = re.match(r"^(\s*)([\w.-]+):(.*)$", line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if "#" in rest and not re.search(r"['\"].*#.*['\"]", rest):
            found[".".join(k for _, k in stack)] = rest.split("#", 1)[1].strip()
    return found


@functools.cache
def _compose(group: str, option: str) -> dict[str, Any]:
    """The option's node as Hydra composes it alone (its own defaults list merged), unresolved."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=[f"+{group}={option}"])
    node: Any = OmegaConf.to_container(cfg, resolve=False)
    for part in group.split("/"):
        node = node.get(part, {})
    return node


def _flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf value); lists are leaves."""
    if isinstance(node, Mapping) and node:
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif prefix:
        yield prefix, node


def _component_checks(node: Any, prefix: str) -> Iterator[tuple[str, str]]:
    """(full key, allowed) of the CHECKS of each visionlab class a `_target_` in `node` names."""
    if isinstance(node, Mapping):
        target = node.get("_target_")
        if isinstance(target, str) and target.startswith("visionlab."):
            module, _, name = target.rpartition(".")
            for check in getattr(getattr(importlib.import_module(module), name), "CHECKS", ()):
                yield f"{prefix}.{check.key}", check.allowed
        for key, child in node.items():
            yield from _component_checks(child, f"{prefix}.{key}")


@functools.cache
def _global_checks() -> dict[str, str]:
    """Checks of keys no `_target_` of their own node leads to: the train command's own
    (the Trainer flags among them) and what the task checks of the optimizer and scheduler groups."""
    from visionlab.training.task import OPTIMIZER_CHECKS, Schedule

    allowed = {c.key: c.allowed for c in _entry_checks("train")}
    allowed |= {f"optimizer.{c.key}": c.allowed for c in OPTIMIZER_CHECKS}
    allowed |= {f"scheduler.{c.key}": c.allowed for c in Schedule.CHECKS}
    return allowed


def _cell(value: Any) -> str:
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, (list, dict)):
        text = re.sub(r"'", "", str(value))
    else:
        text = str(value)
    return "`" + text.replace("|", "\\|") + "`" if text != "" else "`''`"


def _text(value: str) -> str:
    return value.replace("|", "\\|")


def _option_table(group: str, option: str) -> str:
    node = _compose(group, option)
    top = group.replace("/", ".")
    allowed = _global_checks() | dict(_component_checks(node, top))
    comments = _comments(CONF / group / f"{option}.yaml")
    rows = ["| key | default | allowed | note |", "|---|---|---|---|"]
    shown = {f"{top}._target_"}
    for key, value in _flatten({k: v for k, v in node.items() if k != "_target_"}):
        full = f"{top}.{key}"
        shown.add(full)
        rows.append(f"| `{key}` | {_cell(value)} | {_text(allowed.get(full, ''))} | {_text(comments.get(key, ''))} |")
    for full, text in sorted(allowed.items()):
        if full.startswith(f"{top}.") and full not in shown and "." not in full[len(top) + 1 :]:
            rows.append(f"| `{full[len(top) + 1 :]}` | not set | {_text(text)} | the class's own default |")
    target = f"Builds `{node['_target_']}`.\n\n" if "_target_" in node else ""
    return target + ("\n".join(rows) if len(rows) > 2 else "Sets nothing: the defaults of the code apply.")


def _config_page() -> str:
    out = [
        "Groups are chosen on the command line as `group=option` (`model=mlp`), keys set as "
        "`group.key=value` (`model.width=64`). *allowed* is what the component checks before any "
        "data is read; an empty cell is not checked by visionlab (the library that takes it may)."
    ]
    for group in _groups():
        out.append(f"\n## {group}\n")
        for option in _options(group):
            path = CONF / group / f"{option}.yaml"
            out.append(f"### {group}={option}\n")
            if header := _header(path):
                out.append(header + "\n")
            if path.read_text().lstrip().startswith(GLOBAL):
                body = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("#")).strip()
                out.append(f"```yaml\n{body}\n```\n")
            else:
                out.append(_option_table(group, option) + "\n")
    return "\n".join(out)


# ---------------------------------------------------------------- commands


@functools.cache
def _entry_sources() -> dict[str, tuple[str, str]]:
    """Hydra command name -> (module, name of its checks or ''), from the `hydra_entry(...)`
    calls in src/ (`main = hydra_entry("train", run, checks=CHECKS)`)."""
    found = {}
    for path in (ROOT / "src").rglob("*.py"):
        for m in re.finditer(r'hydra_entry\(\s*"(\w+)"([^)]*)\)', path.read_text()):
            module = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts)
            checks = re.search(r"checks=([\w.]+)", m.group(2))
            found[m.group(1)] = (module, checks.group(1) if checks else "")
    return found


def _entry_checks(name: str) -> tuple[Any, ...]:
    """The checks a Hydra command runs on its own keys (`checks=` of its hydra_entry)."""
    module, attr = _entry_sources()[name]
    if not attr:
        return ()
    value: Any = importlib.import_module(module)
    for part in attr.split("."):
        value = getattr(value, part)
    return tuple(value)


def _hydra_commands() -> list[str]:
    """The commands with a help template of their own, `train` first."""
    return sorted((p.stem for p in (CONF / "hydra" / "help").glob("*.yaml")), key=lambda n: (n != "train", n))


def _hydra_help(name: str) -> str:
    """`--help` as Hydra prints it: the template of conf/hydra/help/NAME.yaml with the
    composed config's values, and the config groups (group: options)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=name, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} in the templates, as in a run
    groups = "\n".join(f"{g}: {', '.join(_options(g))}" for g in _groups())
    return string.Template(cfg.hydra.help.template).safe_substitute(APP_CONFIG_GROUPS=groups)


def _script_of(module: str) -> str | None:
    for path in sorted(SCRIPTS.glob("*.py")):
        if re.search(rf"^from {re.escape(module)} import main$", path.read_text(), re.MULTILINE):
            return f"scripts/{path.name}"
    return None


@functools.cache
def _console_commands() -> dict[str, str]:
    """module -> console command, from [project.scripts] of pyproject.toml (read by pattern:
    tomllib is Python 3.11+)."""
    section = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return {module: command for command, module in re.findall(r'^([\w-]+)\s*=\s*"([\w.]+):\w+"', section, re.MULTILINE)}


def _keys_table(name: str) -> str:
    """The entry config's own top-level keys (its groups are in the configuration reference)."""
    from omegaconf import OmegaConf

    path = CONF / f"{name}.yaml"
    own = {
        k: v
        for k, v in OmegaConf.to_container(OmegaConf.load(path), resolve=False).items()
        if k not in ("defaults", "hydra")
    }
    allowed = {c.key: c.allowed for c in _entry_checks(name)}
    comments = _comments(path)
    rows = ["| key | default | allowed | note |", "|---|---|---|---|"]
    rows += [
        f"| `{key}` | {_cell(value)} | {_text(allowed.get(key, ''))} | {_text(comments.get(key, ''))} |"
        for key, value in _flatten(own)
    ]
    return "\n".join(rows) if len(rows) > 2 else "No keys of its own: everything is in its groups."


def _argparse_help(script: Path) -> str:
    """The --help of a script whose main() parses sys.argv with argparse or Hydra, run in this
    process. A main() that parses neither could take --help for work: that fails the build."""
    namespace = runpy.run_path(str(script), run_name="visionlab_docs")
    module = sys.modules.get(namespace["main"].__module__)  # None: main is the script's own
    source = script.read_text() + (inspect.getsource(module) if module else "")
    if "ArgumentParser" not in source and "hydra" not in source:
        raise RuntimeError(
            f"{script}: its main() parses its arguments with neither argparse nor Hydra; "
            "say in docs/hooks/reference.py how to show its --help"
        )
    out, argv = io.StringIO(), sys.argv
    sys.argv = [f"scripts/{script.name}", "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            namespace["main"]()
    finally:
        sys.argv = argv
    return out.getvalue().strip()


def _block(text: str) -> str:
    return f"```text\n{text.rstrip()}\n```\n"


def _commands_page() -> str:
    consoles = _console_commands()
    out, documented = ["## Commands\n"], set()
    for name in _hydra_commands():
        module, _ = _entry_sources()[name]
        script = _script_of(module)
        documented.add(script)
        console = consoles.get(module)
        out.append(f"### {name}\n")
        out.append(" · ".join(f"`{s}`" for s in (f"python {script}" if script else None, console) if s) + "\n")
        out.append(_block(_hydra_help(name)))
        out.append(f"Keys of `conf/{name}.yaml` itself:\n\n{_keys_table(name)}\n")
    tools = []
    for script in sorted(SCRIPTS.glob("*.py")):
        rel = f"scripts/{script.name}"
        if rel in documented:
            continue
        module = re.search(r"^from ([\w.]+) import main$", script.read_text(), re.MULTILINE)
        console = consoles.get(module.group(1)) if module else None
        section = out if console else tools
        section.append(f"### {script.stem}\n")
        section.append(" · ".join(f"`{s}`" for s in (f"python {rel}", console) if s) + "\n")
        section.append(_block(_argparse_help(script)))
    return "\n".join([*out, "## Tools\n", "Measuring and checking tools: no console command.\n", *tools])


PAGES = {"config": functools.cache(_config_page), "commands": functools.cache(_commands_page)}
