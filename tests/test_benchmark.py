"""scripts/benchmark.py end to end on tiny synthetic data; its timings are reported, never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionlab.tools.benchmark import main

TINY = (
    "--batch-sizes",
    "32",
    "--epochs",
    "1",
    "data=synthetic",
    "data.train_size=160",
    "data.val_size=64",
    "data.test_size=64",
    "model.hidden=[32]",
)
N_TRAIN = 160 - 64


def run(tmp_path: Path, *args: str) -> tuple[list[dict], str]:
    out_json, out_md = tmp_path / "bench.json", tmp_path / "BENCH.md"
    out_md.write_text("# Earlier results\n")
    main([*args, *TINY, "--json", str(out_json), "--markdown", str(out_md)])
    return json.loads(out_json.read_text())["rows"], out_md.read_text()


def test_benchmark_times_the_three_paths_and_appends_the_table(tmp_path: Path) -> None:
    rows, md = run(tmp_path, "--cases", "notes_mlp", "--repeats", "2", "--no-channels-last")
    assert [r["path"] for r in rows] == ["visionlab", "lightning", "plain"]
    assert all("channels_last=false" in r["overrides"] for r in rows)  # NCHW, though the config's default is NHWC
    for row in rows:
        assert len(row["epoch_seconds"]) == len(row["whole_epoch_seconds"]) == 2  # 2 alternating repeats
        assert all(0 < t < w for t, w in zip(row["epoch_seconds"], row["whole_epoch_seconds"]))
        assert 0.0 <= row["test_acc"] <= 1.0
        assert row["samples_per_s"] == pytest.approx(N_TRAIN / row["median_epoch_s"])
        assert 0 < row["share_of_matmul_limit"]
    plain = rows[2]
    assert plain["ratio_vs_plain"] == plain["whole_ratio_vs_plain"] == 1.0
    for row in rows[:2]:
        assert row["ratio_vs_plain"] == pytest.approx(row["median_epoch_s"] / plain["median_epoch_s"])
        assert row["whole_ratio_vs_plain"] == pytest.approx(row["median_whole_epoch_s"] / plain["median_whole_epoch_s"])
    assert md.startswith("# Earlier results\n")  # appended, not overwritten
    low, high = min(rows[0]["epoch_seconds"]), max(rows[0]["epoch_seconds"])
    assert f"| notes_mlp | 32 | visionlab | {rows[0]['median_epoch_s']:.2f} ({low:.2f}-{high:.2f}) |" in md
    assert "| notes_mlp | 32 | plain |" in md and "| notes_mlp | 32 | lightning |" in md
    assert "Command: `python scripts/benchmark.py --cases notes_mlp" in md


def test_benchmark_speed_flags_apply_to_both_paths(tmp_path: Path) -> None:
    # the MLP: bfloat16 is emulated (slow) on CPUs without AVX512-BF16, and only the wiring is tested
    rows, _ = run(tmp_path, "--cases", "notes_mlp", "--channels-last", "--precision", "bf16-mixed", "--clock", "cpu")
    assert len(rows) == 3
    assert all(
        "trainer.precision=bf16-mixed" in r["overrides"] and "channels_last=true" in r["overrides"] for r in rows
    )
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in rows)


def test_benchmark_rejects_an_unknown_precision(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--precision", "fp8", *TINY])
    assert "invalid choice: 'fp8'" in capsys.readouterr().err
