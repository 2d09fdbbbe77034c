"""``agent check`` and the check at the start of ``agent run`` (issue 17), on real files in real layouts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from hospital_agent.cli import EXIT_CONFIG, app
from tests.agent.test_adapters import dicom_file

runner = CliRunner()


def png(path: Path, seed: int, size: tuple[int, int] = (24, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def clean_tree(root: Path, per_class: int = 12) -> Path:
    for index in range(per_class):
        png(root / "benign" / f"b{index:02d}.png", index)
        png(root / "malignant" / f"m{index:02d}.png", 1000 + index, (32, 20))
    return root


def config(tmp_path: Path, data: dict[str, object], **extra: object) -> Path:
    path = tmp_path / "agent.yaml"
    settings = {
        "site": "hospital-a",
        "aggregator": "127.0.0.1:9",  # nothing listens: the check and the refusals never need the network
        "insecure_loopback": True,
        "token": "t",
        "data": data,
        "state_dir": str(tmp_path / "state"),
        "bundle_root": str(tmp_path / "bundles"),
        "embed_workers": 0,
        **extra,
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def test_a_clean_site_passes_with_counts_per_class_and_split(tmp_path: Path) -> None:
    path = config(tmp_path, {"adapter": "imagefolder", "root": str(clean_tree(tmp_path / "data"))})
    result = runner.invoke(app, ["check", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True and report["usable"] == 24 and report["classes"] == ["benign", "malignant"]
    benign = report["images_per_class"]["benign"]
    assert benign["total"] == 12 and benign["train"] + benign["val"] + benign["test"] == 12 and benign["train"] >= 6
    assert report["sizes"] == {"24x24": 12, "32x20": 12} and report["modes"] == {"RGB": 24}
    text = runner.invoke(app, ["check", "--config", str(path)])
    assert text.exit_code == 0 and "OK: training can use this data" in text.output


def test_a_messy_tree_is_blocked_with_every_problem_named(tmp_path: Path) -> None:
    root = clean_tree(tmp_path / "data")
    for index in range(3):
        png(root / "Malignant " / f"x{index}.png", 500 + index)  # the same class, typed differently
    shutil.copy(root / "benign" / "b00.png", root / "malignant" / "copy_of_b00.png")  # one image, two labels
    shutil.copy(root / "benign" / "b01.png", root / "benign" / "b01 (1).png")  # a plain duplicate
    (root / "empty_class").mkdir()
    png(root / "__MACOSX" / "benign" / "._b00.png", 7)
    (root / "benign" / "notes.txt").write_text("x")
    (root / "malignant" / "truncated.png").write_bytes((root / "malignant" / "m00.png").read_bytes()[:100])
    path = config(tmp_path, {"adapter": "imagefolder", "root": str(root)})
    result = runner.invoke(app, ["check", "--config", str(path), "--json"])
    assert result.exit_code == EXIT_CONFIG, result.output
    report = json.loads(result.output)
    codes = {finding["code"]: finding for finding in report["findings"]}
    assert codes["label-variants"]["severity"] == "blocking" and "'Malignant '" in codes["label-variants"]["message"]
    conflict = codes["label-conflict"]
    assert conflict["severity"] == "blocking"
    assert sorted(Path(p).name for p in conflict["paths"]) == ["b00.png", "copy_of_b00.png"]
    assert codes["duplicate-files"]["severity"] == "warning"
    assert codes["small-class"]["severity"] == "warning"
    groups = {group["reason"]: group for group in report["skipped_groups"]}
    assert groups["hidden or system entry ignored"]["example_path"].endswith("__MACOSX")
    assert groups["folder has no usable file, so it is not a class"]["count"] == 1
    assert groups["not an image suffix"]["count"] == 1
    assert [item["reason"] for item in report["skipped"] if Path(item["path"]).name == "truncated.png"] != []
    assert "empty_class" not in report["classes"] and "__MACOSX" not in report["classes"]


def test_run_refuses_blocked_data_naming_the_files_and_leaves_the_list(tmp_path: Path) -> None:
    root = clean_tree(tmp_path / "data")
    shutil.copy(root / "benign" / "b00.png", root / "malignant" / "copy_of_b00.png")
    path = config(tmp_path, {"adapter": "imagefolder", "root": str(root)})
    result = runner.invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == EXIT_CONFIG
    assert "label-conflict" in result.output
    assert str(root / "malignant" / "copy_of_b00.png") in result.output
    assert "agent check" in result.output and "Traceback" not in result.output
    assert (tmp_path / "state" / "check-skipped.json").exists()


def test_run_refuses_a_site_whose_dicom_files_all_fail_and_names_them(tmp_path: Path) -> None:
    """Issue 17 §2: all files undecodable used to exit with only '(6 unreadable)' and no list."""
    root = tmp_path / "dicom"
    for cls in ("normal", "pneumonia"):
        for index in range(2):
            broken = dicom_file(root / cls / f"{index}.dcm").read_bytes()
            (root / cls / f"{index}.dcm").write_bytes(broken[:-200])  # pixel data cut short
    path = config(tmp_path, {"adapter": "dicom", "root": str(root)})
    result = runner.invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == EXIT_CONFIG
    assert "no-usable-images" in result.output and str(root / "normal" / "0.dcm") in result.output
    listed = json.loads((tmp_path / "state" / "check-skipped.json").read_text())
    assert len(listed) == 4 and all("pixel data" in item["reason"] for item in listed)


def test_check_names_the_missing_codec_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file
    from pydicom.pixels.decoders import base as decoder_base

    root = tmp_path / "dicom"
    (root / "pneumonia").mkdir(parents=True)
    jpeg_ls = str(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    for index in range(3):
        dicom_file(root / "normal" / f"{index}.dcm")
        shutil.copy(jpeg_ls, root / "pneumonia" / f"{index}.dcm")
    decoder = decoder_base.get_decoder(pydicom.uid.JPEGLSLossless)
    monkeypatch.setattr(decoder, "_available", {})  # a machine without the dicom-codecs extra
    path = config(tmp_path, {"adapter": "dicom", "root": str(root)})
    result = runner.invoke(app, ["check", "--config", str(path), "--json"])
    report = json.loads(result.output)
    assert result.exit_code == EXIT_CONFIG  # one class left: blocking
    codec = next(finding for finding in report["findings"] if finding["code"] == "missing-codec")
    assert "1.2.840.10008.1.2.4.80" in codec["message"] and "fedmedclip[dicom-codecs]" in codec["message"]
    assert "pyjpegls" in codec["message"]
    syntaxes = {item["uid"]: item for item in report["transfer_syntaxes"]}
    assert syntaxes["1.2.840.10008.1.2.4.80"]["decodable"] is False
    assert syntaxes["1.2.840.10008.1.2.1"]["decodable"] is True


def test_settings_errors_appear_before_torch_is_imported(tmp_path: Path) -> None:
    bad = tmp_path / "agent.yaml"
    bad.write_text(yaml.safe_dump({"site": "a", "aggregator": "nowhere", "data": {"adapter": "x", "root": "/"}}))
    script = (
        "import sys\n"
        "from fedmedclip.cli import main\n"
        "sys.argv = ['fedmedclip', 'agent', sys.argv[1], '--config', sys.argv[2]]\n"
        "try:\n    main()\n"
        "except SystemExit as stop:\n    print('EXIT', stop.code, 'torch' in sys.modules, 'grpc' in sys.modules)\n"
    )
    for command in ("run", "embed", "check", "status"):
        done = subprocess.run(
            [sys.executable, "-c", script, command, str(bad)], capture_output=True, text=True, timeout=120
        )
        assert f"EXIT {EXIT_CONFIG} False False" in done.stdout, (command, done.stdout, done.stderr)
        assert "unknown data adapter" in done.stderr


def test_embed_without_a_backbone_section_fails_fast_when_the_aggregator_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hospital_agent.cli.EMBED_JOIN_BUDGET_S", 2.0)  # the real budget is 15 s
    path = config(tmp_path, {"adapter": "imagefolder", "root": str(clean_tree(tmp_path / "data", 2))})
    started = time.monotonic()
    result = runner.invoke(app, ["embed", "--config", str(path)])
    assert result.exit_code == EXIT_CONFIG
    assert "add a backbone: section" in result.output
    assert "did not answer within 2 s" in result.output
    assert time.monotonic() - started < 30  # bounded, where it used to retry Join forever


def test_a_run_whose_images_all_fail_to_decode_writes_the_list_before_refusing(tmp_path: Path) -> None:
    """Issue 17 §2: ``embed_site`` raised before ``report_skipped`` ran, so embed-skipped.json never appeared."""
    import torch

    from fedmedclip.data.imagefolder import DatasetError, scan_imagefolder
    from hospital_agent.session import prepare_session
    from hospital_agent.settings import load_settings
    from tests.agent.conftest import tiny_run

    root = tmp_path / "data"
    for cls in ("a", "b"):
        for index in range(2):
            (root / cls).mkdir(parents=True, exist_ok=True)
            (root / cls / f"{index}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    path = config(tmp_path, {"adapter": "imagefolder", "root": str(root)}, device="cpu")
    settings = load_settings(path)
    with pytest.raises(DatasetError, match=r"no usable images \(4 unreadable\): .*0\.png"):
        prepare_session(settings, "run-1", tiny_run(), scan_imagefolder(root), torch.device("cpu"))
    listed = json.loads((tmp_path / "state" / "embed-skipped.json").read_text())
    assert sorted(Path(item["path"]).name for item in listed) == ["0.png", "0.png", "1.png", "1.png"]


@pytest.mark.parametrize(
    ("command", "keys"),
    [
        ("run", ["data.adapter", "data.root", "token_file", "backbone.model"]),
        ("embed", ["backbone.weights", "cache_dir", "data."]),
        ("check", ["data.adapter", "data.manifest", "data.classes", "data.split_seed"]),
    ],
)
def test_help_names_the_keys_that_matter_and_the_guide(command: str, keys: list[str]) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for key in [*keys, "docs/data.md"]:
        assert key in result.output, (command, key)


def test_run_without_a_token_says_so_before_reading_the_data(tmp_path: Path) -> None:
    path = config(tmp_path, {"adapter": "imagefolder", "root": str(tmp_path / "nowhere")}, token=None)
    result = runner.invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == EXIT_CONFIG and "no site token" in result.output
    assert "does not exist" not in result.output  # the data was never looked at


def test_run_does_not_decode_again_what_the_embedding_cache_already_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from fedmedclip.data import check as check_module
    from fedmedclip.data.cache import EmbeddingCache
    from hospital_agent.data_check import check_site_data
    from hospital_agent.settings import load_settings

    root = clean_tree(tmp_path / "data")
    settings = load_settings(config(tmp_path, {"adapter": "imagefolder", "root": str(root)}))
    decoded: list[str] = []
    real_decode = check_module.decode_image

    def counting_decode(data: bytes, path: Path) -> object:
        decoded.append(Path(path).name)
        return real_decode(data, path)

    monkeypatch.setattr(check_module, "decode_image", counting_decode)

    first = check_site_data(settings, trust_cache=True)  # no cache yet: every file is decoded
    assert first.usable == 24 and len(decoded) == 24
    assert not settings.effective_cache_dir.exists()  # the check never creates an empty cache

    benign = sorted((root / "benign").glob("*.png"))
    with EmbeddingCache(settings.effective_cache_dir) as cache:
        cache.put_many("some-backbone", {hashlib.sha256(p.read_bytes()).hexdigest(): np.ones(4) for p in benign})
    decoded.clear()
    again = check_site_data(settings, trust_cache=True)
    assert sorted(decoded) == sorted(f"m{index:02d}.png" for index in range(12))  # only the uncached class
    assert again.to_json() == first.to_json()  # same report: sizes, modes, splits, findings

    decoded.clear()
    check_site_data(settings)  # `agent check` still decodes everything
    assert len(decoded) == 24
