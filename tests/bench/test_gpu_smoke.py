"""bench/gpu.py end to end on the CPU (--smoke), so the GPU script cannot rot between GPU runs.

Nothing here is timed: the figures are checked for presence and shape, and every part must have run.
"""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_gpu_script_runs_end_to_end_on_the_cpu(bench, tmp_path):
    assert bench("gpu").main(["--smoke", "--results", str(tmp_path)]) == 0
    entry = json.loads((tmp_path / "gpu.json").read_text())["gpu"]["cpu-smoke"]
    assert entry["errors"] == {}
    p2 = entry["p2"]
    assert p2["round_path"] == "DeviceRoundTrainer" and p2["rounds"] == 3
    assert p2["round_path_info"]["cuda_graph"] is False  # no capture on a CPU: the same steps, eagerly
    assert p2["reference_train_local_round"]["round_s_median"] > 0
    assert entry["p3"]["decoder"] == "EmbedPipeline" and entry["p3"]["p3_embed_efficiency"] > 0
    formats = entry["formats"]["by_format"]
    assert set(formats) == {"jpeg224", "jpeg1024", "png224", "dicom512"}
    assert all(f["decoded"] == f["images"] == 24 and f["pass_images_per_s"] > 0 for f in formats.values())
    assert entry["p4"]["p4_batch_throughput_ratio"] > 0 and entry["p4"]["p4_predict_p50_ratio"] > 0
    assert entry["complete"] is True and "p2_compiled" not in entry  # compiling is left to the GPU run
    measured = {key for key, ratio in entry["ratios"].items() if ratio["measured"] is not None}
    assert measured == {
        "p2_gpu_round_speedup",
        "p2_gpu_50round_speedup",
        "p3_gpu_embed_efficiency_jpeg224",
        "p4_gpu_batch_throughput_ratio",
        "p4_gpu_predict_p50_ratio",
    }


def test_device_round_times_runs_the_trainer_and_the_codec(tiny_backbone):
    import torch

    from fedmedclip.experiment.perf.compute import device_round_times

    features = torch.randn(40, tiny_backbone.embed_dim)
    result = device_round_times(tiny_backbone, features, torch.arange(40) % 2, ["nevus", "melanoma"], rounds=2)
    assert result["rounds"] == 2 and result["round_s_median"] > 0 and result["cuda_graph"] is False
