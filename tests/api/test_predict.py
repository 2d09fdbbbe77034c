"""POST /v1/sites/{site}/predict: what a clinician's client gets back, and that it is the method's answer."""

from __future__ import annotations

import math

import torch

from fedmedclip.bundle import read_current
from fedmedclip.data.images import decode_image
from tests.api.conftest import SITE_B_CLASSES, auth, files
from tests.api.images import dicom_bytes, jpeg_bytes, png_bytes
from tests.bundle.factory import CLASSES


def test_png_jpeg_and_dicom_in_one_request(client):
    response = client.post(
        "/v1/sites/site-a/predict",
        headers=auth("a"),
        files=files(("a.png", png_bytes()), ("b.jpg", jpeg_bytes()), ("c.dcm", dicom_bytes())),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["site"] == "site-a" and body["bundle_version"] == "v0001" and body["fam_version"] == 4
    assert body["classes"] == list(CLASSES)
    assert [p["filename"] for p in body["predictions"]] == ["a.png", "b.jpg", "c.dcm"]
    for prediction in body["predictions"]:
        probs = prediction["probabilities"]
        assert list(probs) == list(CLASSES)
        assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-5)
        assert prediction["predicted_class"] == max(probs, key=probs.get)
        alpha = prediction["alpha"]
        assert 0 <= alpha <= 1 and prediction["contributions"] == {"zero_shot": 1 - alpha, "head": alpha}
        for name in CLASSES:  # p = (1-α) p_F + α p_M, class by class
            mixed = (1 - alpha) * prediction["zero_shot"][name] + alpha * prediction["head"][name]
            assert math.isclose(probs[name], mixed, abs_tol=1e-5)
    assert response.headers["cache-control"] == "no-store"


def test_http_answer_equals_the_classifier_on_the_same_image(client, bundle_root, tiny_backbone):
    data = png_bytes(colour=(10, 200, 120))
    response = client.post("/v1/sites/site-b/predict", headers=auth("b"), files=files(("x.png", data)))
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    bundle = read_current(bundle_root, "site-b")
    pixels = tiny_backbone.preprocess(decode_image(data)).unsqueeze(0)
    expected = bundle.classifier().predict(tiny_backbone.encode_images(pixels))
    got = torch.tensor([prediction["probabilities"][c] for c in SITE_B_CLASSES])
    assert torch.allclose(got, expected.probs[0], atol=1e-5)
    assert math.isclose(prediction["alpha"], float(expected.alpha[0]), abs_tol=1e-5)


def test_a_key_for_every_site_may_use_any_site(client):
    for site in ("site-a", "site-b"):
        response = client.post(f"/v1/sites/{site}/predict", headers=auth("all"), files=files(("a.png", png_bytes())))
        assert response.status_code == 200, response.text


def test_site_listing_is_scoped_to_the_key(client):
    listed = client.get("/v1/sites", headers=auth("a")).json()["sites"]
    assert [s["site"] for s in listed] == ["site-a"]
    everything = client.get("/v1/sites", headers=auth("all")).json()["sites"]
    assert {s["site"]: s["ready"] for s in everything} == {"site-a": True, "site-b": True, "site-empty": False}


def test_site_detail_shows_classes_versions_and_manifest_metrics(client):
    body = client.get("/v1/sites/site-b", headers=auth("b")).json()
    assert body["classes"] == list(SITE_B_CLASSES) and body["versions"] == ["v0001"]
    assert body["current"] == body["version"] == "v0001" and body["fam_version"] == 4
    assert set(body["metrics"]) == {"loss", "train_samples"} and body["has_head"]
    assert body["last_error"] is None


def test_calibrated_probabilities_and_the_not_for_clinical_use_warning(client, bundle_root, tiny_backbone):
    from fedmedclip.model.ensemble import calibrate_probs
    from tests.api.conftest import SITE_B_CALIBRATION

    data = png_bytes(colour=(200, 40, 90))
    body = client.post("/v1/sites/site-b/predict", headers=auth("b"), files=files(("x.png", data))).json()
    assert body["calibrated"] is True
    # Calibrated: the served p is softmax(log p_mix / T) of the raw mixture, not the mixture itself.
    prediction = body["predictions"][0]
    alpha = prediction["alpha"]
    raw = torch.tensor(
        [(1 - alpha) * prediction["zero_shot"][c] + alpha * prediction["head"][c] for c in SITE_B_CLASSES]
    )
    served = torch.tensor([prediction["probabilities"][c] for c in SITE_B_CLASSES])
    assert torch.allclose(served, calibrate_probs(raw.unsqueeze(0), SITE_B_CALIBRATION.temperature)[0], atol=1e-5)
    # The tiny test backbone is random-init: every answer says so, calibrated or not.
    assert body["warning"].startswith("Not for clinical use") and "randomly initialised" in body["warning"]
    assert "not calibrated" not in body["warning"]
    plain = client.post("/v1/sites/site-a/predict", headers=auth("a"), files=files(("x.png", data))).json()
    assert plain["calibrated"] is False and "not calibrated" in plain["warning"]

    listed = {s["site"]: s for s in client.get("/v1/sites", headers=auth("all")).json()["sites"]}
    assert listed["site-b"]["calibrated"] and listed["site-b"]["random_init_backbone"]
    assert listed["site-empty"]["warning"] is None
    detail = client.get("/v1/sites/site-b", headers=auth("b")).json()
    assert detail["calibration"]["temperature"] == SITE_B_CALIBRATION.temperature
    assert detail["calibration"]["ece_after"] == SITE_B_CALIBRATION.ece_after


def test_a_pretrained_calibrated_bundle_carries_no_warning(bundle_root):
    import dataclasses

    from fedmedclip.bundle import read_current
    from inference_api.service import clinical_warning

    bundle = read_current(bundle_root, "site-b")
    pretrained = dataclasses.replace(
        bundle,
        backbone=dataclasses.replace(bundle.backbone, spec=dataclasses.replace(bundle.backbone.spec, weights="openai")),
    )
    assert clinical_warning(pretrained) is None
    uncalibrated = dataclasses.replace(pretrained, calibration=None)
    assert clinical_warning(uncalibrated) == "Not for clinical use: the probabilities are not calibrated."
