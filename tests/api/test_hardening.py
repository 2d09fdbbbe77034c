"""Issue 11's inference-API scenarios, each over a real uvicorn socket (``fedmedclip api serve`` in its own
process): thin images, reduced decoding, metrics without sites, the part counter, cut bodies and uvicorn's
own 400s. Every refusal is a 4xx JSON error, and the keep-alive connection survives the ones the app answers."""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedmedclip.model.backbone import BackboneSpec
from tests.api.conftest import KEYS
from tests.api.images import dicom_bytes, jpeg_bytes, png_bytes, thin_png
from tests.api.live_server import LiveServer, live_server

MAX_IMAGES = 4
PREDICT = "/v1/sites/site-a/predict"
INFER = "/v2/models/site-a/infer"
BOUNDARY = "hardening-boundary"


@pytest.fixture(scope="module")
def server(
    bundle_root: Path, tiny_spec: BackboneSpec, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    env = {
        "FEDMEDCLIP_API_MAX_IMAGES": str(MAX_IMAGES),
        "FEDMEDCLIP_API_MAX_REQUEST_BYTES": str(1024 * 1024),
        # The setting (40 MP), so that the thin images pass the pixel limit and meet the aspect rule.
        "FEDMEDCLIP_API_MAX_IMAGE_PIXELS": "40000000",
    }
    with live_server(bundle_root, tiny_spec, tmp_path_factory.mktemp("log") / "api.log", env=env) as live:
        yield live


def _part(name: str, data: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
    )


def multipart(*items: tuple[str, bytes]) -> bytes:
    return b"".join(_part(name, data) for name, data in items) + f"--{BOUNDARY}--\r\n".encode()


def _headers(length: int) -> dict[str, str]:
    return {
        "X-API-Key": KEYS["a"],
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(length),
    }


def post(conn: http.client.HTTPConnection, body: bytes, path: str = PREDICT) -> tuple[int, dict[str, str], dict]:
    conn.request("POST", path, body=body, headers=_headers(len(body)))
    response = conn.getresponse()
    payload = response.read()
    assert response.getheader("content-type", "").startswith("application/json"), payload[:200]
    assert b"Traceback" not in payload
    return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(payload)


@pytest.fixture
def conn(server: LiveServer) -> Iterator[http.client.HTTPConnection]:
    connection = http.client.HTTPConnection(server.host_port, timeout=60)
    yield connection
    connection.close()


def assert_refused_and_connection_kept(conn: http.client.HTTPConnection, body: bytes, status: int, words: str) -> None:
    code, headers, payload = post(conn, body)
    assert code == status, payload
    assert payload["error"] and words in payload["message"], payload
    sock = conn.sock
    assert sock is not None and headers.get("connection") != "close"
    good, _, answer = post(conn, multipart(("ok.png", png_bytes())))
    assert good == 200, answer
    assert conn.sock is sock  # the same keep-alive connection answered both


@pytest.mark.parametrize("width", [2_000_000, 40_000_000, 100_000])
def test_thin_png_is_a_422_and_the_connection_survives(conn, width):
    data = thin_png(width)
    assert len(data) < 8 * 1024  # the "177 bytes": a cheap upload
    assert_refused_and_connection_kept(conn, multipart(("thin.png", data)), 422, "aspect ratio")


def test_tall_png_is_refused_the_same_way(conn):
    assert_refused_and_connection_kept(conn, multipart(("tall.png", thin_png(1, 100_000))), 422, "aspect ratio")


@pytest.mark.parametrize("size", [(65_000, 1), (1, 65_000), (4_000, 20)])
def test_thin_jpeg_is_a_422(conn, size):
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, "JPEG")
    assert_refused_and_connection_kept(conn, multipart(("thin.jpg", buffer.getvalue())), 422, "aspect ratio")


@pytest.mark.parametrize("shape", [(1, 65_000), (65_000, 1)])  # DICOM's Rows and Columns stop at 65,535
def test_thin_dicom_is_a_422(conn, shape):
    pixels = (np.arange(shape[0] * shape[1], dtype=np.uint16) % 4096).reshape(shape)
    assert_refused_and_connection_kept(conn, multipart(("thin.dcm", dicom_bytes(pixels))), 422, "aspect ratio")


def test_a_moderate_aspect_ratio_is_still_classified(conn):
    code, _, payload = post(conn, multipart(("wide.png", png_bytes((600, 60))), ("x.jpg", jpeg_bytes((50, 400)))))
    assert code == 200 and len(payload["predictions"]) == 2, payload


def test_large_uploads_pass_the_head_limit_on_a_kept_alive_connection(conn):
    """The head-size limit counts head bytes only: bodies far larger than 16 KiB, twice on one connection."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(buffer, "PNG")
    assert len(buffer.getvalue()) > 200_000
    for _ in range(2):
        code, headers, payload = post(conn, multipart(("noise.png", buffer.getvalue())))
        assert code == 200 and headers.get("connection") != "close", payload


def test_thin_image_over_the_open_inference_protocol(conn):
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1],
                    "datatype": "BYTES",
                    "data": [base64.b64encode(thin_png(100_000)).decode()],
                }
            ]
        }
    ).encode()
    conn.request("POST", INFER, body=body, headers={"X-API-Key": KEYS["a"], "Content-Type": "application/json"})
    response = conn.getresponse()
    payload = json.loads(response.read())
    assert response.status == 422 and "aspect ratio" in payload["error"], payload


def test_too_many_elements_over_the_open_inference_protocol(conn):
    items = [base64.b64encode(b"x").decode()] * 1000
    body = json.dumps({"inputs": [{"name": "image", "shape": [1000], "datatype": "BYTES", "data": items}]}).encode()
    conn.request("POST", INFER, body=body, headers={"X-API-Key": KEYS["a"], "Content-Type": "application/json"})
    response = conn.getresponse()
    payload = json.loads(response.read())
    assert response.status == 413 and str(MAX_IMAGES) in payload["error"], payload


def test_a_thousand_files_are_refused_before_the_rest_is_sent(server):
    """The 413 arrives while most of the 1,000 parts have not even been sent."""
    parts = [_part(f"{i}.png", b"\x89PNG" + bytes(60)) for i in range(1000)]
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in _headers(len(body)).items())
    with socket.create_connection(_address(server), timeout=30) as sock:
        sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: test\r\n{head}\r\n".encode())
        sock.sendall(b"".join(parts[: MAX_IMAGES + 1]))  # 5 of 1,000 parts; the client then waits
        status_line, payload = _read_response(sock)
    assert status_line.startswith("HTTP/1.1 413"), status_line
    assert payload["error"] == "too_many_images" and str(MAX_IMAGES) in payload["message"]


def test_a_thousand_binary_elements_are_refused_before_the_data_is_sent(server):
    """/v2 with binary tensor data: the JSON part says 1,000 images; the 413 comes before the data."""
    header = json.dumps(
        {
            "inputs": [
                {"name": "image", "shape": [1000], "datatype": "BYTES", "parameters": {"binary_data_size": 64_000}}
            ]
        }
    ).encode()
    total = len(header) + 64_000
    head = (
        f"POST {INFER} HTTP/1.1\r\nHost: test\r\nX-API-Key: {KEYS['a']}\r\n"
        f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {len(header)}\r\n"
        f"Content-Length: {total}\r\n\r\n"
    )
    with socket.create_connection(_address(server), timeout=30) as sock:
        sock.sendall(head.encode() + header + bytes(1000))  # then the client waits, 63,000 bytes short
        status_line, payload = _read_response(sock)
    assert status_line.startswith("HTTP/1.1 413"), status_line
    assert str(MAX_IMAGES) in payload["error"], payload


def test_a_body_cut_mid_part_is_a_clear_400(conn):
    whole = multipart(("a.png", png_bytes()))
    cut = whole[: len(whole) // 2]
    code, _, payload = post(conn, cut)
    assert code == 400 and "cut short" in payload["message"], payload
    assert "no image" not in payload["message"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        b"POST /v1/sites/site-a/predict HTTP/1.1\r\nHost: test\r\nContent-Length: -1\r\n\r\n",
        b"POST /v2/models/site-a/infer HTTP/1.1\r\nHost: test\r\nContent-Length: 12x\r\n\r\n",
    ],
    ids=["oversized-headers", "negative-content-length", "bad-content-length"],
)
def test_uvicorns_own_400s_are_json(server, request_bytes):
    with socket.create_connection(_address(server), timeout=30) as sock:
        sock.sendall(request_bytes)
        status_line, payload = _read_response(sock)
    assert status_line.startswith("HTTP/1.1 400"), status_line
    assert payload["error"] == "bad_request" and "not valid HTTP" in payload["message"]


def test_metrics_name_no_site(conn):
    post(conn, multipart(("ok.png", png_bytes())))
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    assert "fedmedclip_api_images_total" in text and "fedmedclip_api_sites_ready 2.0" in text
    assert "site-a" not in text and "site-b" not in text and "site=" not in text


def test_openapi_bounds_the_files(conn):
    conn.request("GET", "/openapi.json")
    spec = json.loads(conn.getresponse().read())
    body = spec["paths"]["/v1/sites/{site}/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    files = body["schema"]["properties"]["files"]
    assert files["maxItems"] == MAX_IMAGES and files["minItems"] == 1 and files["items"]["minLength"] == 1
    infer = spec["paths"]["/v2/models/{site}/infer"]["post"]["requestBody"]["content"]["application/json"]
    assert infer["schema"]["properties"]["inputs"]["items"]["properties"]["data"]["maxItems"] == MAX_IMAGES


def _address(server: LiveServer) -> tuple[str, int]:
    host, port = server.host_port.rsplit(":", 1)
    return host, int(port)


def _read_response(sock: socket.socket) -> tuple[str, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["content-type"].startswith("application/json"), lines
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return lines[0], json.loads(body[:length])


@pytest.mark.parametrize("finished", [True, False], ids=["whole-head-over-limit", "endless-head"])
def test_an_oversized_head_is_refused_whether_or_not_it_ends(server, finished):
    """A 40 KB head sent at once, and a head that never ends (20 KB so far, in pieces): both a JSON 400."""
    start = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: "
    with socket.create_connection(_address(server), timeout=30) as sock:
        if finished:
            sock.sendall(start + b"a" * 40_000 + b"\r\n\r\n")
        else:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(start)
            for _ in range(10):
                sock.sendall(b"a" * 2_000)
                time.sleep(0.02)
        status_line, payload = _read_response(sock)
    assert status_line.startswith("HTTP/1.1 400") and payload["error"] == "bad_request", (status_line, payload)
