"""Health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from fastapi.testclient import TestClient

from inference_api.app import create_app
from tests.api.conftest import auth, files, make_settings
from tests.api.images import png_bytes


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] and ready.json()["sites_ready"] == 2


def test_not_ready_without_any_valid_bundle(tmp_path, tiny_spec, tiny_backbone):
    (tmp_path / "site-x").mkdir()
    with TestClient(create_app(make_settings(tmp_path, tiny_spec), backbone=tiny_backbone)) as empty:
        response = empty.get("/readyz")
        assert response.status_code == 503 and response.json()["ready"] is False
        assert empty.get("/healthz").status_code == 200


def test_metrics_count_requests_images_batches_and_bundles(client):
    client.post("/v1/sites/site-a/predict", headers=auth(), files=files(("a.png", png_bytes())))
    text = client.get("/metrics").text
    assert 'fedmedclip_api_requests_total{method="POST",route="/v1/sites/{site}/predict",status="200"}' in text
    assert "fedmedclip_api_images_total " in text
    assert "fedmedclip_api_batch_images_count" in text
    assert 'fedmedclip_api_bundle_loads_total{outcome="loaded"} 2.0' in text
    assert "fedmedclip_api_sites_ready 2.0" in text
    assert "fedmedclip_api_ready 1.0" in text
    # /metrics needs no key, so it names no site: a key learns nothing about sites outside its scope.
    assert "site-a" not in text and "site-b" not in text and "site=" not in text


def test_openapi_documents_the_api_and_its_errors(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/sites", "/v1/sites/{site}", "/v1/sites/{site}/predict", "/healthz", "/readyz", "/metrics"} <= set(
        spec["paths"]
    )
    predict = spec["paths"]["/v1/sites/{site}/predict"]["post"]
    assert "multipart/form-data" in predict["requestBody"]["content"]
    assert {"401", "403", "404", "409", "413", "415", "422"} <= set(predict["responses"])
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    assert client.get("/docs").status_code == 404  # Swagger UI pulls a CDN: off unless enabled


def test_the_page_and_its_assets_are_served_with_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>FedMedCLIP" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.split("<body>")[0].replace("http-equiv", "")  # nothing from elsewhere
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
