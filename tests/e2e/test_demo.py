"""``fedmedclip demo`` as a user runs it: every service a real process, predictions over REST."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_federation_and_reports_every_site(tmp_path: Path):
    out = tmp_path / "demo"
    exe = Path(sys.executable).parent / "fedmedclip"
    args = [
        "demo",
        "--out-dir",
        str(out),
        "--model",
        "fedmedclip-tiny",
        "--weights",
        "random",
        "--rounds",
        "2",
        "--images-per-site",
        "60",
        "--image-size",
        "64",
        "--timeout",
        "300",
    ]
    result = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["backbone"] == {"name": "fedmedclip-tiny", "weights": "random", "pretrained": False}
    assert report["rounds_configured"] == 2
    # The per-round history: version, close time, bytes and each site's reported validation metrics.
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    assert [r["version"] for r in report["rounds"]] == [2, 3]
    for item in report["rounds"]:
        assert item["close_s"] > 0 and set(item["bytes"]) == {"site-1", "site-2", "site-3"}
        assert all(0 <= m["ensemble_acc"] <= 1 and "zero_shot_acc" in m for m in item["metrics"].values())
    assert len(report["upload_bytes_per_round"]) == 2
    assert all(set(r) == {"site-1", "site-2", "site-3"} for r in report["upload_bytes_per_round"])
    assert set(report["sites"]) == {"site-1", "site-2", "site-3"}
    for site in report["sites"].values():
        assert site["n_images"] >= 10 and site["n_classes"] == 4
        assert 0.0 <= site["ensemble_acc"] <= 1.0 and 0.0 <= site["mean_alpha"] <= 1.0
        assert 0.0 <= site["ece"] <= 1.0 and 0.0 <= site["ece_uncalibrated"] <= 1.0
    # 60 images per site leave 12 validation images: too few to fit a temperature, so none is claimed.
    assert all(site["temperature"] is None for site in report["sites"].values())
    markdown = (out / "report.md").read_text()
    for plot in ("accuracy_per_round.png", "upload_per_round.png", "round_times.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG") and f"]({plot})" in markdown
    # The results table on stdout, a pipe here: plain columns with every header whole (no "zero-sh…").
    header = next(line for line in result.stdout.splitlines() if line.startswith("site "))
    assert [name.strip() for name in header.split("  ") if name.strip()] == [
        "site",
        "images",
        "classes",
        "zero-shot acc",
        "head acc",
        "ensemble acc",
        "macro-F1",
        "ECE",
        "mean α",
    ]
    # Every service stopped: a second run in the same folder starts cleanly.
    again = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]


def test_demo_refuses_a_foreign_folder(tmp_path: Path):
    (tmp_path / "precious.txt").write_text("keep")
    exe = Path(sys.executable).parent / "fedmedclip"
    result = subprocess.run(
        [str(exe), "demo", "--out-dir", str(tmp_path), "--model", "fedmedclip-tiny", "--weights", "random"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1
    line = f"error: demo failed: {tmp_path} is not empty and is not an earlier demo's folder; choose another --out-dir"
    assert line in result.stderr.splitlines(), result.stderr  # one unbroken line, whatever the terminal width
    assert (tmp_path / "precious.txt").read_text() == "keep"
