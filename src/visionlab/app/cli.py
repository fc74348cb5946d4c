"""What every Hydra entry point shares: config location, early override checks, and bad
input reported as one line instead of a traceback."""

from __future__ import annotations

import argparse
import difflib
import errno
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, NoReturn, cast

import hydra
import lightning
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import configure_log, run_job
from hydra.errors import HydraException, InstantiationException
from hydra.types import HydraContext, RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf, read_write
from omegaconf.errors import OmegaConfBaseException

from visionlab.app.config import CONF_DIR, ConfigError, check_group_overrides, compose_config, override, validate
from visionlab.app.hydra_seams import args_parser, job_callbacks
from visionlab.app.resume import check_fits, check_unchanged
from visionlab.app.resume import prepare as prepare_resume
from visionlab.app.runlock import RunLock
from visionlab.app.safety import check_composed
from visionlab.utils.checks import Check
from visionlab.utils.errors import BUG_NOTE
from visionlab.utils.io import atomic_write
from visionlab.utils.quiet import quiet_known_noise

log = logging.getLogger("visionlab")

# Errors that mean "the input is wrong", not "the code is wrong": reported in one line.
# ConfigError is the base of visionlab's own (CheckpointError, DataSourceError, ImageError);
# a plain ValueError is a bug. Lightning's MisconfigurationException names the user's flag.
USER_ERRORS = (ConfigError, FileNotFoundError, PermissionError, FloatingPointError, MisconfigurationException)
# Code that judges a config as it instantiates it: what it raises is about the config.
_CONFIG_JUDGES = tuple(str(Path(cast(str, m.__file__)).parent) for m in (hydra, lightning))


def is_user_error(err: BaseException) -> bool:
    """Whether `err` is the user's bad input rather than a bug. Hydra wraps what a `_target_`
    raises; its own refusals (no such class, arguments that do not fit the signature) and
    Lightning's while the Trainer is built are about the config too."""
    while isinstance(err, InstantiationException):
        cause = err.__cause__
        if cause is None or _raised_in(cause, _CONFIG_JUDGES):
            return True
        err = cause
    return isinstance(err, USER_ERRORS) or _disk_full(err)


def _disk_full(err: BaseException) -> bool:
    """A write that failed for want of space (anywhere in the chain: torch and Lightning wrap
    the OSError) is the machine's state, not a bug: one line, and the files already written
    (the last good checkpoint, written to a temporary name first) are intact."""
    seen: set[int] = set()
    chain: BaseException | None = err
    while chain is not None and id(chain) not in seen:
        if isinstance(chain, OSError) and chain.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen.add(id(chain))
        chain = chain.__cause__ or chain.__context__
    return False


def _raised_in(err: BaseException, folders: tuple[str, ...]) -> bool:
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.startswith(folders)


def _report_bug() -> NoReturn:
    """The exception being handled, with its traceback and BUG_NOTE below it; exit 1 as Hydra does."""
    traceback.print_exc()
    print(BUG_NOTE, file=sys.stderr)
    sys.exit(1)


def one_line(err: BaseException) -> str:
    """The innermost message of `err` (Hydra wraps instantiation errors), on one line."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return " ".join(str(err).split()) or type(err).__name__


def _in_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


ERROR_FILE = "error.txt"  # in a failed run's folder: what went wrong, for the report


def _error_file() -> Path | None:
    try:
        return Path(HydraConfig.get().runtime.output_dir) / ERROR_FILE
    except ValueError:
        return None


def _record_failure(message: str) -> None:
    """Write `message` to the run folder's error.txt, so a report lists the run as failed."""
    if (path := _error_file()) is not None:
        try:
            atomic_write(path, message + "\n")
        except OSError:  # a full disk, or a folder gone: the message still reaches stderr and the log
            pass


def _sweeper_reads_failures() -> bool:
    """Whether the sweeper must see a failed job as an exception rather than a NaN result.

    Hydra's basic sweeper ignores results, so a NaN lets the sweep (and its report) finish.
    Other sweepers score results: visionlab's Optuna sweeper marks a raising trial FAIL
    with the exception's message as its reason.
    """
    target = str(
        OmegaConf.select(cast(DictConfig, HydraConfig.get()), "sweeper._target_", default="")
    )  # a DictConfig at runtime
    return not target.endswith("BasicSweeper")


def hydra_entry(
    config_name: str,
    fn: Callable[[DictConfig], Any],
    *,
    checks: Sequence[Check] = (),
    resumes: bool = False,
    locks: bool = False,
) -> Callable[[], None]:
    """A `main()` that runs `fn(cfg)` under Hydra with the checks above.

    A failing run writes its message to error.txt in its folder. Bad input (`is_user_error`)
    ends a single run with one line on stderr (exit 2); a bug with its traceback and
    BUG_NOTE (exit 1). In a multirun a failing job is logged (bad input
    in one line, a crash with its traceback) and the other jobs go on: the basic sweeper
    gets NaN, other sweepers the exception. VISIONLAB_DEBUG=1 gives full tracebacks.
    Before Hydra starts, `prepare_run` checks the arguments (`checks`: the entry config's
    own top-level keys, besides its components' checks; `resumes`: `ckpt_path=`
    resumes a run; `locks`: the run folder is locked while the run writes there); a job
    it could not check (a sweep's) is checked once, as it starts.
    """

    def task_function(cfg: DictConfig, checked: bool = False) -> Any:
        quiet_known_noise()  # again: Hydra has configured logging for this job
        try:
            if not checked:  # a sweep's job, another primary config (-cn), a DDP child: not checked before
                validate(cfg, checks)
            result = fn(cfg)
            if (stale := _error_file()) is not None:
                stale.unlink(missing_ok=True)  # a resumed run that now succeeded
            return result
        except Exception as err:
            user_error = is_user_error(err)
            message = f"error: {one_line(err)}" if user_error else f"error: {type(err).__name__}: {one_line(err)}"
            _record_failure(message)
            if os.environ.get("VISIONLAB_DEBUG"):
                raise
            if _in_multirun():
                log.error(message if user_error else f"{message} ({BUG_NOTE})", exc_info=not user_error)
                if _sweeper_reads_failures():
                    raise
                return float("nan")
            if not user_error:
                _report_bug()
            log.error(message)
            print(message, file=sys.stderr)
            sys.exit(2)

    wrapped = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task_function)

    def main() -> None:
        quiet_known_noise()
        argv, lock, composed = sys.argv[1:], None, None
        try:
            if os.environ.get("LOCAL_RANK", "0") == "0":  # DDP's child processes get the prepared argv
                argv, lock, composed = prepare_run(config_name, argv, checks, resumes=resumes, locks=locks)
        except Exception as err:
            if os.environ.get("VISIONLAB_DEBUG"):
                raise
            if not is_user_error(err):
                _report_bug()
            print(f"error: {one_line(err)}", file=sys.stderr)
            sys.exit(2)
        sys.argv[1:] = argv  # as Hydra would run it: DDP's launcher starts the other ranks with it
        try:
            if composed is not None:
                run_composed(composed, config_name, lambda cfg: task_function(cfg, checked=True))
            else:
                wrapped()
        finally:
            if lock is not None:
                lock.release()

    return main


def run_composed(cfg: DictConfig, config_name: str, task_function: Callable[[DictConfig], Any]) -> None:
    """Hydra's single run (what `hydra.main` does for one job: its callbacks, run folder,
    .hydra/ files and log file, then `task_function`) of the config `prepare_run` composed
    and checked, so that it is composed once rather than again by Hydra."""
    if cfg.hydra.mode is None:  # as hydra.main records it
        with read_write(cfg.hydra):
            cfg.hydra.mode = RunMode.RUN
            cfg.hydra.overrides.hydra.append("hydra.mode=RUN")
    configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=config_name):
        callbacks = job_callbacks(cfg)
        callbacks.on_run_start(config=cfg, config_name=config_name)
        context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=callbacks)
        ret = run_job(
            task_function=task_function,
            config=cfg,
            job_dir_key="hydra.run.dir",
            job_subdir_key=None,
            hydra_context=context,
        )
        callbacks.on_run_end(config=cfg, config_name=config_name, job_return=ret)
    _ = ret.return_value  # raises what the job raised (a bug under VISIONLAB_DEBUG=1)


def _is_multirun(argv: Sequence[str]) -> bool:
    return "-m" in argv or "--multirun" in argv


class _Unparsed(Exception):
    """Hydra's parser refused the command line; Hydra will say why, in its own words."""


def _refuse(message: str) -> NoReturn:
    raise _Unparsed(message)


def hydra_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]] | None:
    """The command line as Hydra itself parses it: its flags (`--cfg job`, `-cn NAME`, ...)
    and, second, the tokens that are not overrides, in their order. None if Hydra would
    refuse it (Hydra then prints its usage)."""
    parser = args_parser()
    parser.error = _refuse  # type: ignore[method-assign]
    try:
        args = parser.parse_args(list(argv))
    except _Unparsed:
        return None
    flags, overrides = list(argv), list(args.overrides)
    for token in overrides:
        flags.remove(token)
    return args, flags


# Flags that print something and run nothing: no checks, no run folder, no lock. (--version
# exits in hydra_args, printing what Hydra would.)
INFORMATIONAL = ("help", "hydra_help", "cfg", "info", "shell_completion")


class Prepared(NamedTuple):
    """What `prepare_run` hands on: the arguments Hydra runs with, the lock taken, and the
    config it composed and checked (None where each job is checked as it starts)."""

    argv: list[str]
    lock: RunLock | None
    cfg: DictConfig | None


def prepare_run(
    config_name: str, argv: Sequence[str], checks: Sequence[Check] = (), resumes: bool = False, locks: bool = False
) -> Prepared:
    """Everything checkable before Hydra starts and writes a run folder: group options,
    unknown keys, the composed config's values, a resume's checkpoint, the folder's lock.

    Hydra's own flags pass through untouched; only the overrides are checked. Informational
    flags and `--experimental-rerun` (a saved config, overrides ignored) skip the checks;
    `-cn/-cp/-cd` (another primary config) and `-m` are checked as each job builds.
    Returns the arguments Hydra should run with (a resume's replayed overrides, the run
    folder pinned), the lock taken, if any, and the checked config. Raises a USER_ERRORS
    exception otherwise.
    """
    parsed = hydra_args(argv)
    if parsed is None:
        return Prepared(list(argv), None, None)
    args, flags = parsed
    if any(getattr(args, flag) for flag in INFORMATIONAL) or args.experimental_rerun:
        return Prepared(list(argv), None, None)
    argv = list(args.overrides)
    check_group_overrides(argv)
    resume = None
    if resumes:
        argv, resume = prepare_resume(argv)
        check_group_overrides(argv)
        if resume is not None:
            check_unchanged(argv, resume, config_name)
    if args.multirun or args.config_name or args.config_path or args.config_dir:
        if args.multirun and not (args.config_name or args.config_path or args.config_dir):
            check_new_sweep(config_name, argv)
        return Prepared(flags + argv, None, None)  # each job is checked as it starts
    check_new_keys(argv, config_name)
    cfg = precompose(config_name, argv)
    if cfg.hydra.mode == RunMode.MULTIRUN:  # set by a config (hparams_search=...), not by -m
        return Prepared(flags + argv, None, None)
    validate(cfg, checks)
    run_dir = str(cfg.hydra.run.dir)
    if resume is not None:
        check_fits(cfg, resume)
        check_composed(cfg, run_dir)
    else:
        check_new_folder(run_dir, resumes)
    if not locks:
        return Prepared(flags + argv, None, cfg)
    lock = RunLock(run_dir).acquire()
    if not any(a.startswith("hydra.run.dir=") for a in argv):
        argv.append(override("hydra.run.dir", run_dir))  # the folder locked is the folder Hydra uses
        with read_write(cfg.hydra):
            cfg.hydra.run.dir = run_dir
    return Prepared(flags + argv, lock, cfg)


# What a run folder holds: a command that writes into a folder holding any of these would
# replace or mix files of another run.
RUN_MARKERS = (".hydra", "checkpoints", "metrics.json", "run_info.json", ERROR_FILE)


def check_new_folder(run_dir: str, resumes: bool) -> None:
    """A command writes into a folder of its own: a `hydra.run.dir` that already holds a run
    (its .hydra/, checkpoints or metrics) is refused; resuming is the one way into a run."""
    found = [m for m in RUN_MARKERS if (Path(run_dir) / m).exists()]
    if found:
        hint = "; to continue that run, resume it: ckpt_path=<run>/checkpoints/last.ckpt" if resumes else ""
        raise ConfigError(
            f"hydra.run.dir={run_dir} already holds a run ({', '.join(found)}); choose a new folder, "
            f"or leave hydra.run.dir out for a new dated one{hint}"
        )


def check_new_sweep(config_name: str, argv: Sequence[str]) -> None:
    """A basic sweep numbers its jobs 0, 1, ... inside `hydra.sweep.dir`: into a folder that
    holds an earlier sweep (its multirun.yaml) it would replace those jobs' folders, so it is
    refused. (visionlab's Optuna sweeper continues a study there on purpose, numbering its
    jobs by trial.) The folder is composed from the overrides that are not sweeps."""
    parser = OverridesParser.create()
    try:
        single = [a for a in argv if not parser.parse_override(a).is_sweep_override()]
        cfg = precompose(config_name, single)
    except (HydraException, ConfigError):
        return  # a sweep whose single parts do not compose alone: Hydra reports it per job
    sweeper = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default=""))
    sweep_dir = Path(str(cfg.hydra.sweep.dir))
    if sweeper.endswith("BasicSweeper") and (sweep_dir / "multirun.yaml").exists():
        raise ConfigError(
            f"hydra.sweep.dir={sweep_dir} already holds a sweep (multirun.yaml): its jobs' folders "
            "would be replaced; choose a new folder, or leave hydra.sweep.dir out for a new dated one"
        )


def precompose(config_name: str, argv: Sequence[str]) -> DictConfig:
    """The config Hydra will compose for `argv`, with Hydra's own errors in one line."""
    try:
        return compose_config(argv, config_name=config_name)
    except (HydraException, OmegaConfBaseException) as err:
        # Hydra would suggest adding a mistyped top-level key with `+`: name the key meant instead
        missing = re.match(r"Could not override '([^'./]+)'", str(err))
        typo = next((a for a in argv if missing and a.split("=", 1)[0] == missing.group(1)), None)
        if missing and typo:
            raise _unknown_key(typo, missing.group(1), config_name) from None
        lines = [line.strip() for line in str(err).splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
        raise ConfigError(" ".join(lines[:2]) or type(err).__name__) from None


def _entry_nodes(conf_dir: Path, config_name: str) -> dict[str, Any]:
    """The top-level keys of an entry config and of the entry configs it builds on
    (lr_find.yaml's defaults hold `train`), with their values."""
    entry = cast(DictConfig, OmegaConf.load(conf_dir / f"{config_name}.yaml"))  # an entry config is a mapping
    nodes: dict[str, Any] = {}
    for base in entry.get("defaults") or []:
        if isinstance(base, str) and base != "_self_" and (conf_dir / f"{base}.yaml").is_file():
            nodes.update(_entry_nodes(conf_dir, base))
    return {**nodes, **{str(k): v for k, v in entry.items() if k != "defaults"}}


def _known_keys(config_name: str, conf_dir: Path) -> tuple[set[str], list[str]]:
    """The top-level keys an override may name, and the keys one level below them."""
    entry = _entry_nodes(conf_dir, config_name)
    known = {p.name for p in conf_dir.iterdir() if p.is_dir()} | set(entry) | {"hydra"}
    return known, [f"{k}.{sub!s}" for k, v in entry.items() if isinstance(v, DictConfig) for sub in v.keys()]


def _unknown_key(arg: str, top: str, config_name: str, conf_dir: Path = CONF_DIR) -> ConfigError:
    """`top` is no key of the config: suggest the group's key of that name (`from_test=5`
    for predict.from_test=5), else the closest top-level key."""
    known, nested = _known_keys(config_name, conf_dir)
    close = [k for k in nested if k.endswith(f".{top}")] or difflib.get_close_matches(top, sorted(known), n=1)
    hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(sorted(known))}"
    return ConfigError(f"{arg}: {top} is not a key of {config_name}'s config{hint}")


def check_new_keys(argv: Sequence[str], config_name: str, conf_dir: Path = CONF_DIR) -> None:
    """`+key=value` may add keys inside a group (`+trainer.accumulate_grad_batches=4`), but
    a new top-level key is almost always a typo: refuse it and suggest the closest."""
    known, _ = _known_keys(config_name, conf_dir)
    for arg in argv:
        if not arg.startswith("+"):
            continue
        top = re.split(r"[./=@]", arg.lstrip("+"), maxsplit=1)[0]
        if top not in known:
            raise _unknown_key(arg, top, config_name, conf_dir)
