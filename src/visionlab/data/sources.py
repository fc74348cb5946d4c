"""Finding, fetching and verifying dataset files.

A dataset is a few named files. `ensure_files` makes them present and verified in
`data_dir`, looking in order at: `data_dir` itself, a directory named by an environment
variable, system copies (such as Debian's dataset packages), and finally the official
download. Every copy or download goes to a temporary name and is renamed only once
verified, so an interrupted fetch never leaves a half-written file behind. An archive
(CIFAR-10's tar.gz) is unpacked the same way: into a temporary folder renamed when done.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from visionlab.utils.errors import ConfigError
from visionlab.utils.io import atomic_dir, atomic_path, atomic_write


class DataSourceError(ConfigError):
    """Dataset files could not be found, fetched or verified (a user-input error: the message says where it looked)."""


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset.

    `md5` is of the *decompressed* content when the file is gzipped, because mirrors
    re-wrap the same data in different gzip headers; `raw_md5=True` makes it the md5 of
    the file as stored, for files published with that checksum (MNIST, CIFAR-10's tar.gz).
    `extract` names the folder a tar archive unpacks to: once that folder exists the
    archive itself is no longer needed.
    """

    name: str
    md5: str | None = None
    raw_md5: bool = False
    extract: str | None = None

    @property
    def gunzip(self) -> bool:
        """Whether the checksum is of the decompressed content."""
        return self.name.endswith(".gz") and not self.raw_md5


@dataclass(frozen=True)
class DatasetFiles:
    """Where a dataset's files may be found and how to recognise good copies."""

    title: str
    files: tuple[FileSpec, ...]
    urls: tuple[str, ...] = ()
    env_var: str | None = None
    system_dirs: tuple[str, ...] = ()
    how_to: str = ""


def content_md5(path: Path, gunzip: bool | None = None) -> str:
    """md5 of the file, of its decompressed content when `gunzip` (default: a .gz name)."""
    digest = hashlib.md5()
    gunzip = path.suffix == ".gz" if gunzip is None else gunzip
    open_ = gzip.open if gunzip else open
    with open_(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_file(path: Path, spec: FileSpec, verify: bool = True) -> str | None:
    """None when `path` is a good copy of `spec`, else the reason it is not."""
    if not path.is_file():
        return "missing"
    if not verify or spec.md5 is None:
        return None
    try:
        got = content_md5(path, spec.gunzip)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        return f"unreadable ({err})"
    return None if got == spec.md5 else f"checksum {got} != expected {spec.md5}"


def _download(url: str, dest: Path, timeout: float = 30.0) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:  # noqa: S310
        shutil.copyfileobj(resp, out)


def _candidate_dirs(ds: DatasetFiles) -> list[tuple[str, Path]]:
    dirs: list[tuple[str, Path]] = []
    if ds.env_var and os.environ.get(ds.env_var):
        dirs.append((f"${ds.env_var}", Path(os.environ[ds.env_var])))
    dirs += [("system copy", Path(d)) for d in ds.system_dirs]
    return dirs


def ensure_files(
    ds: DatasetFiles,
    data_dir: str | Path,
    verify: bool = True,
    download: Callable[[str, Path], None] = _download,
) -> Path:
    """Make every file of `ds` present and verified in `data_dir`; return `data_dir`.

    Raises DataSourceError naming every place it looked when a file cannot be had.
    """
    data_dir = Path(data_dir)
    looked: list[str] = []
    for spec in ds.files:
        if spec.extract and (data_dir / spec.extract).is_dir():
            continue
        target = data_dir / spec.name
        reason = check_file(target, spec, verify)
        if reason is None and not verify:
            reason = _differs_from_source(target)
        looked_here = [f"{target} ({reason})"]
        if reason is None or _fetch_one(ds, spec, target, verify, download, looked_here):
            if spec.extract and not (data_dir / spec.extract).is_dir():
                extract_tar(target, data_dir / spec.extract)
            continue
        looked += looked_here
    if looked:
        lines = "; ".join(looked)
        raise DataSourceError(f"{ds.title}: could not get its files. Looked at: {lines}. {ds.how_to}".strip())
    return data_dir


COPIES_RECORD = ".copies.json"  # in a data_dir: which files were copied from where, and as what


def _copies(folder: Path) -> dict[str, dict]:
    try:
        record = json.loads((folder / COPIES_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _differs_from_source(target: Path) -> str | None:
    """Without checksums, a copy this module made is trusted only while it and its source
    are as they were when it was copied (size and time stamp, recorded in COPIES_RECORD):
    a copy damaged since, or whose source was replaced, is fetched again. Files a user put
    there themselves have no record and are used as they are."""
    made = _copies(target.parent).get(target.name)
    if not isinstance(made, dict):
        return None
    source = Path(str(made.get("source", "")))
    if _stamp(target) != made.get("copy") or (source.is_file() and _stamp(source) != made.get("copy")):
        return f"changed since it was copied from {source}"
    return None


def _record_copy(source: Path, target: Path) -> None:
    record = _copies(target.parent)
    record[target.name] = {"source": str(source), "copy": _stamp(target)}
    atomic_write(target.parent / COPIES_RECORD, json.dumps(record, indent=1))


def _fetch_one(
    ds: DatasetFiles,
    spec: FileSpec,
    target: Path,
    verify: bool,
    download: Callable[[str, Path], None],
    looked: list[str],
) -> bool:
    for label, folder in _candidate_dirs(ds):
        if spec.extract and (folder / spec.extract).is_dir():
            with atomic_dir(target.parent / spec.extract) as tmp:
                shutil.copytree(folder / spec.extract, tmp, dirs_exist_ok=True)
            return True
        source = folder / spec.name
        reason = check_file(source, spec, verify)
        if reason is None:
            with atomic_path(target) as tmp:
                shutil.copy2(source, tmp)  # with its time stamp, for _differs_from_source
            _record_copy(source, target)
            return True
        looked.append(f"{label} {source} ({reason})")
    for base in ds.urls:
        url = base.rstrip("/") + "/" + spec.name
        try:
            with atomic_path(target) as tmp:
                _download_verified(url, tmp, spec, verify, download)
            return True
        except (OSError, DataSourceError) as err:
            looked.append(f"{url} ({str(err).splitlines()[0] if str(err) else type(err).__name__})")
    return False


def _download_verified(
    url: str, tmp: Path, spec: FileSpec, verify: bool, download: Callable[[str, Path], None]
) -> None:
    download(url, tmp)
    reason = check_file(tmp, spec, verify)
    if reason is not None:
        raise DataSourceError(f"downloaded file is bad: {reason}")


def extract_tar(archive: Path, target: Path) -> None:
    """Unpack the single top folder of `archive` to `target`, all or nothing.

    The archive's top folder must be named like `target` (as CIFAR-10's is); members that
    would land outside it are refused by tarfile's "data" filter.
    """
    with atomic_dir(target) as tmp:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataSourceError(f"{archive}: cannot unpack ({err})") from None
        inner = tmp / target.name
        if not inner.is_dir():
            raise DataSourceError(f"{archive}: has no top folder {target.name}/")
        for item in inner.iterdir():
            item.rename(tmp / item.name)
        inner.rmdir()
