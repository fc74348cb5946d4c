"""Finding, fetching and verifying dataset files, with files made in the real idx format."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from visionlab.data.formats.idx import read_idx, write_idx
from visionlab.data.sources import COPIES_RECORD, DatasetFiles, DataSourceError, FileSpec, content_md5, ensure_files


def make_dataset(folder: Path, n: int = 6, seed: int = 0) -> DatasetFiles:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    write_idx(folder / "images.gz", rng.integers(0, 256, (n, 28, 28)))
    write_idx(folder / "labels.gz", rng.integers(0, 10, n))
    specs = tuple(FileSpec(name, content_md5(folder / name)) for name in ("images.gz", "labels.gz"))
    return DatasetFiles("Tiny", specs, env_var="TINY_DIR", how_to="Put them somewhere.")


def test_idx_round_trip_and_header_checks(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", data)
    assert read_idx(tmp_path / "a.gz").numpy().tolist() == data.tolist()
    raw = gzip.open(tmp_path / "a.gz").read()
    (tmp_path / "short").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "bad")


def test_files_already_in_data_dir_are_used(tmp_path, monkeypatch):
    ds = make_dataset(tmp_path / "data")
    monkeypatch.setenv("TINY_DIR", str(tmp_path / "nowhere"))
    assert ensure_files(ds, tmp_path / "data", download=_no_network) == tmp_path / "data"


def test_env_dir_comes_before_system_dir_and_download(tmp_path, monkeypatch):
    ds = make_dataset(tmp_path / "env")
    monkeypatch.setenv("TINY_DIR", str(tmp_path / "env"))
    other = make_dataset(tmp_path / "system", seed=1)  # different content: would fail the checksums
    ds = DatasetFiles(
        ds.title,
        ds.files,
        urls=("http://example.invalid",),
        env_var="TINY_DIR",
        system_dirs=(str(tmp_path / "system"),),
    )
    ensure_files(ds, tmp_path / "data", download=_no_network)
    assert content_md5(tmp_path / "data" / "images.gz") == ds.files[0].md5
    assert other.files[0].md5 != ds.files[0].md5


def test_system_dir_used_when_env_unset_and_bad_copy_is_skipped(tmp_path, monkeypatch):
    monkeypatch.delenv("TINY_DIR", raising=False)
    good = make_dataset(tmp_path / "system")
    make_dataset(tmp_path / "data", seed=3)  # a stale, wrong copy in data_dir gets replaced
    ds = DatasetFiles(good.title, good.files, env_var="TINY_DIR", system_dirs=(str(tmp_path / "system"),))
    ensure_files(ds, tmp_path / "data", download=_no_network)
    assert content_md5(tmp_path / "data" / "labels.gz") == good.files[1].md5


def test_download_is_verified_and_written_atomically(tmp_path, monkeypatch):
    monkeypatch.delenv("TINY_DIR", raising=False)
    origin = make_dataset(tmp_path / "origin")
    ds = DatasetFiles(origin.title, origin.files, urls=("http://mirror",), env_var="TINY_DIR")
    fetched = []

    def fake_download(url: str, dest: Path) -> None:
        fetched.append(url)
        dest.write_bytes((tmp_path / "origin" / Path(url).name).read_bytes())

    ensure_files(ds, tmp_path / "data", download=fake_download)
    assert fetched == ["http://mirror/images.gz", "http://mirror/labels.gz"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir() if p.name != COPIES_RECORD) == [
        "images.gz",
        "labels.gz",
    ]


def test_interrupted_or_corrupt_download_leaves_nothing_and_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.delenv("TINY_DIR", raising=False)
    origin = make_dataset(tmp_path / "origin")
    ds = DatasetFiles(
        origin.title,
        origin.files,
        urls=("http://mirror",),
        env_var="TINY_DIR",
        system_dirs=(str(tmp_path / "sys"),),
        how_to="Put them somewhere.",
    )

    def broken_download(url: str, dest: Path) -> None:
        dest.write_bytes(b"partial")
        raise OSError("connection reset")

    with pytest.raises(DataSourceError) as err:
        ensure_files(ds, tmp_path / "data", download=broken_download)
    message = str(err.value)
    assert "\n" not in message
    for where in (
        "data/images.gz (missing)",
        "sys/images.gz",
        "http://mirror/images.gz (connection reset)",
        "Put them somewhere.",
    ):
        assert where in message
    assert list((tmp_path / "data").iterdir()) == []

    def corrupt_download(url: str, dest: Path) -> None:
        dest.write_bytes(gzip.compress(b"not the data"))

    with pytest.raises(DataSourceError, match="checksum"):
        ensure_files(ds, tmp_path / "data", download=corrupt_download)
    assert list((tmp_path / "data").iterdir()) == []


def _no_network(url: str, dest: Path) -> None:
    raise AssertionError(f"tried to download {url}")
