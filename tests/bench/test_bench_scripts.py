"""Each benchmark's smallest mode runs and writes its keys; run_all assembles latest.json and latest.md.

No timing is asserted anywhere: the figures are checked for presence and type, never for speed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fedmedclip.experiment.perf.collect import TOP_LEVEL_KEYS


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One image set (work) and one results folder for all scripts, as run_all shares them."""
    return tmp_path_factory.mktemp("work"), tmp_path_factory.mktemp("results")


def _run(bench, name: str, shared: tuple[Path, Path]) -> dict:
    work, results = shared
    bench(name).main(["--quick", "--work", str(work), "--results", str(results)])
    return json.loads((results / f"{name.split('_')[0]}.json").read_text())


@pytest.mark.slow
def test_p1_quick(bench, shared):
    data = _run(bench, "p1_upload", shared)
    assert isinstance(data["p1_upload_bytes"], int) and data["p1_upload_bytes"] > 0
    assert isinstance(data["p1_accuracy_cost_pt"], float)
    sizes = data["bytes_per_site_round"]
    assert sizes["masked_max"] < sizes["dense_fp32_mean"] < sizes["fedavg_full_clip_fp32"]
    assert data["machine"]["cpu_count"] >= 1


@pytest.mark.slow
def test_p2_quick(bench, shared):
    data = _run(bench, "p2_compute", shared)
    assert data["p2_round_speedup"] > 0 and data["p2_50round_speedup"] > 0
    assert data["ours"]["timed"].startswith("for real") and data["fedavg"]["timed"].startswith("scaled")
    assert data["fedavg"]["steps_timed"] == 1 and data["rounds"] == 3


@pytest.mark.slow
def test_p3_quick(bench, shared):
    data = _run(bench, "p3_embed", shared)
    assert data["p3_embed_efficiency"] > 0 and data["images"] == 16


@pytest.mark.slow
def test_p6_quick(bench, shared):
    data = _run(bench, "p6_dp", shared)
    assert isinstance(data["p6_dp_accuracy_cost_pt_eps8"], float)
    table = data["table"]
    assert set(table) == {"inf", "1", "3", "8"} and table["inf"]["epsilon_achieved"] is None
    for label in ("1", "3", "8"):  # each site spent (nearly) all of its budget and not more
        assert 0.9 * float(label) < table[label]["epsilon_achieved"] <= float(label)
        assert table[label]["seconds_per_round"] > 0


@pytest.mark.slow
def test_run_all_collects_everything_into_latest(bench, shared):
    _, results = shared
    for name in ("p1_upload", "p2_compute", "p3_embed"):
        if not (results / f"{name.split('_')[0]}.json").is_file():  # when run alone
            _run(bench, name, shared)
    # What the inference API and aggregator benchmarks write.
    (results / "p4.json").write_text(json.dumps({"p4_predict_p50_ratio": 1.05, "p4_batch_throughput_ratio": 0.7}))
    (results / "p5.json").write_text(json.dumps({"p5_round_close_ms": 80}))
    (results / "p7.json").write_text(json.dumps({"p7_site_rounds_per_s_cpu": 900, "p7_site_rounds_per_cpu_s": 500}))
    (results / "p8.json").write_text(
        json.dumps({"p8_secagg_upload_bytes": 250000, "p8_secagg_round_overhead_100_sites": 2.5})
    )
    _write_p4_concurrency(results)
    latest = bench("run_all").main(["--collect-only", "--results", str(results)])
    written = json.loads((results / "latest.json").read_text())
    assert set(TOP_LEVEL_KEYS) | {"machine"} <= set(written)
    assert all(written[key] is not None for key in TOP_LEVEL_KEYS)
    assert written["machine"]["torch_version"] and written["machine"]["device"] == "cpu"
    assert written["goals"]["p4_predict_p50_ratio"]["holds"] is True
    assert written["goals"]["p4_batch_throughput_ratio"]["holds"] is False
    assert latest["p5_round_close_ms"] == 80.0
    table = (results / "latest.md").read_text()
    assert "| P5 round close, 100 sites | ≤ 200 ms | 80 ms | yes |" in table
    assert "| P4 batched / raw batch-32 throughput | ≥ 80% | 70.0% | no |" in table


def test_p8_quick_sums_exactly_and_reports_bytes_and_scaling(bench, tmp_path):
    out = tmp_path / "p8.json"
    data = bench("p8_secagg").main(["--quick", "--out", str(out)])  # asserts the unmasked sum is exact
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))
    rows = {row["sites"]: row for row in data["rounds"]}
    assert set(rows) == {3, 10} and rows[10]["bits"] > rows[3]["bits"]
    assert all(row["upload_bytes"] > row["masked_input_bytes"] > 0 and row["overhead"] > 0 for row in rows.values())
    assert data["p8_secagg_upload_bytes"] is None  # only the 100-site run sets the headline figures
    assert [row["auto"]["degree"] for row in data["scaling"]] == [7, 12]


def test_missing_figures_read_as_not_measured(bench, tmp_path):
    (tmp_path / "p1.json").write_text(json.dumps({"p1_upload_bytes": 1000, "p1_accuracy_cost_pt": 0.1}))
    (tmp_path / "p9.json").write_text("{broken")
    bench("run_all").main(["--collect-only", "--results", str(tmp_path)])
    written = json.loads((tmp_path / "latest.json").read_text())
    assert written["p1_upload_bytes"] == 1000 and written["p2_round_speedup"] is None
    assert written["goals"]["p5_round_close_ms"]["holds"] is None
    assert "error" in written["details"]["p9"]
    assert (
        "| P5 round close, 100 sites | ≤ 200 ms | — (not measured) | not measured |"
        in (tmp_path / "latest.md").read_text()
    )


def test_external_scripts_get_their_own_quick_flag_and_output_path(bench, tmp_path):
    script = tmp_path / "p4_predict.py"
    out = tmp_path / "p4.json"
    script.write_text("print('usage: p4 [--small] [--out OUT] [--help]')\n")
    arguments = bench("run_all")._external_arguments
    assert arguments(script, out, True) == ["--small", "--out", str(out)]
    assert arguments(script, out, False) == ["--out", str(out)]  # full runs keep the script's own defaults
    script.write_text("print('usage: p4')\n")
    assert arguments(script, out, True) == []


def test_gpu_script_says_clearly_when_there_is_no_gpu(bench, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert bench("gpu").main(["--results", str(tmp_path)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "gpu.json").exists()
    assert sys.modules["gpu"]


def _write_p4_concurrency(results: Path) -> None:
    """What bench/p4_concurrency.py writes beside p4.json, plus a tiny variant collect must not read."""
    figures = {"p4_api_cpu_ratio": 0.9, "p4_api_p50_ms": 41.0, "p4_api_p99_ms": 88.0, "p4_soak_rss_mib_per_min": 0.2}
    (results / "p4_concurrency.json").write_text(json.dumps(figures))
    (results / "p4_concurrency_tiny.json").write_text(json.dumps({"p4_api_p50_ms": 1.0}))


def test_collect_keeps_concurrency_and_simulation_figures(tmp_path):
    from fedmedclip.experiment.perf.collect import assemble, read_results

    _write_p4_concurrency(tmp_path)
    (tmp_path / "p7.json").write_text(json.dumps({"p7_site_rounds_per_s_cpu": 900, "p7_site_rounds_per_cpu_s": 500}))
    latest = assemble(read_results(tmp_path), {}, {})
    assert latest["p4_api_p50_ms"] == 41.0 and latest["p4_api_cpu_ratio"] == 0.9
    assert latest["p4_soak_rss_mib_per_min"] == 0.2 and latest["p7_site_rounds_per_s_cpu"] == 900.0
    assert set(latest["details"]) == {"p4_concurrency", "p7"}
    assert latest["p1_upload_bytes"] is None
