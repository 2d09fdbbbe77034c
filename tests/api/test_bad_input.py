"""Every bad input of the issue, one test each: a 4xx JSON error with a message, and the server keeps serving."""

from __future__ import annotations

import pytest

from tests.api.conftest import KEYS, MAX_BYTES, MAX_IMAGES, auth, files
from tests.api.images import dicom_bytes, png_bytes

PREDICT = "/v1/sites/site-a/predict"


def assert_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code and body["message"], body
    assert "Traceback" not in response.text
    return body["message"]


@pytest.fixture(autouse=True)
def still_serving(client):
    """After each bad request, a good one still gets its answer."""
    yield
    response = client.post(PREDICT, headers=auth("a"), files=files(("ok.png", png_bytes())))
    assert response.status_code == 200, response.text


def test_corrupt_image_bytes(client):
    data = bytearray(png_bytes())
    data[40:] = bytes(len(data) - 40)  # a real PNG signature and header, then zeros
    message = assert_error(
        client.post(PREDICT, headers=auth(), files=files(("scan.png", bytes(data)))), 422, "bad_image"
    )
    assert "scan.png" in message


def test_truncated_dicom(client):
    data = dicom_bytes()
    response = client.post(PREDICT, headers=auth(), files=files(("cut.dcm", data[: len(data) // 2])))
    assert "pixel data" in assert_error(response, 422, "bad_image")


def test_text_file_named_png(client):
    response = client.post(PREDICT, headers=auth(), files=files(("notes.png", b"patient notes, not an image\n")))
    assert "not a PNG, JPEG or DICOM" in assert_error(response, 415, "unsupported_media_type")


def test_empty_upload(client):
    assert "empty" in assert_error(client.post(PREDICT, headers=auth(), files=files(("e.png", b""))), 422, "empty_file")


def test_multipart_without_any_file(client):
    response = client.post(PREDICT, headers=auth(), files={"note": (None, "a text field, no file")})
    assert "no image" in assert_error(response, 422, "no_images")


def test_too_many_images(client):
    many = files(*[(f"{i}.png", png_bytes()) for i in range(MAX_IMAGES + 1)])
    message = assert_error(client.post(PREDICT, headers=auth(), files=many), 413, "too_many_images")
    assert str(MAX_IMAGES) in message


def test_oversized_body_by_content_length(client):
    big = png_bytes() + b"\0" * MAX_BYTES
    assert_error(client.post(PREDICT, headers=auth(), files=files(("big.png", big))), 413, "payload_too_large")


def test_oversized_body_streamed_without_content_length(client):
    def chunks():
        yield b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
        for _ in range(MAX_BYTES // 65536 + 2):
            yield b"\0" * 65536

    headers = {**auth(), "content-type": "multipart/form-data; boundary=x"}
    assert_error(client.post(PREDICT, headers=headers, content=chunks()), 413, "payload_too_large")


def test_not_multipart(client):
    response = client.post(PREDICT, headers=auth(), json={"image": "base64..."})
    assert_error(response, 415, "unsupported_media_type")


def test_unknown_site(client):
    response = client.post("/v1/sites/no-such-site/predict", headers=auth("all"), files=files(("a.png", png_bytes())))
    assert_error(response, 404, "unknown_site")


def test_missing_key(client):
    response = client.post(PREDICT, files=files(("a.png", png_bytes())))
    assert "X-API-Key" in assert_error(response, 401, "unauthorized")


def test_wrong_key(client):
    response = client.post(PREDICT, headers={"X-API-Key": KEYS["a"] + "x"}, files=files(("a.png", png_bytes())))
    assert_error(response, 401, "unauthorized")


def test_another_sites_key(client):
    response = client.post(PREDICT, headers=auth("b"), files=files(("a.png", png_bytes())))
    assert_error(response, 403, "forbidden")
    # Unknown sites answer 403 too for a scoped key: it learns nothing about sites outside its scope.
    assert_error(client.get("/v1/sites/secret-site", headers=auth("b")), 403, "forbidden")


def test_site_without_a_bundle_yet(client):
    response = client.post("/v1/sites/site-empty/predict", headers=auth("all"), files=files(("a.png", png_bytes())))
    assert "no verified bundle" in assert_error(response, 409, "no_bundle")


def test_unknown_route_and_method_are_json_too(client):
    assert_error(client.get("/v3/nothing"), 404, "not_found")
    # Under /v2 (the Open Inference Protocol) the body is the protocol's {"error": <message>}.
    assert client.get("/v2/nothing").json() == {"error": "Not Found"}
    assert_error(client.get(PREDICT, headers=auth()), 405, "method_not_allowed")
