"""The Open Inference Protocol face, driven by NVIDIA's ``tritonclient`` (a client we did not write) against a
real ``fedmedclip api serve`` process: health, metadata, infer on PNG and DICOM, version pinning, the
classification extension, and every error a client can provoke, with its status."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.api.conftest import KEYS, SITE_B_CLASSES, populate
from tests.api.images import dicom_bytes, jpeg_bytes, png_bytes
from tests.api.live_server import LiveServer, live_server

SITE_A_VERSION = "v0001"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_backbone, tiny_spec) -> Iterator[LiveServer]:
    work = tmp_path_factory.mktemp("oip")
    populate(work / "bundles", tiny_backbone)
    env = {"FEDMEDCLIP_API_MAX_IMAGES": "4", "FEDMEDCLIP_API_RELOAD_INTERVAL_S": "3600"}
    with live_server(work / "bundles", tiny_spec, work / "server.log", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.host_port, network_timeout=60.0) as triton_client:
        yield triton_client


def auth(key: str = "a") -> dict[str, str]:
    return {"X-API-Key": KEYS[key]}


def image_input(*images: bytes) -> triton.InferInput:
    # Binary tensor data: tritonclient refuses to put non-UTF-8 bytes in JSON (base64 JSON is tested below).
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    return tensor


def v1_predict(server: LiveServer, site: str, key: str, *images: bytes) -> dict:
    files = [("files", (f"img{i}", data, "application/octet-stream")) for i, data in enumerate(images)]
    response = httpx.post(f"{server.url}/v1/sites/{site}/predict", files=files, headers=auth(key), timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "fedmedclip"
    assert {"binary_tensor_data", "classification"} <= set(metadata["extensions"])


def test_model_metadata_names_the_served_bundle_version(client):
    metadata = client.get_model_metadata("site-b", headers=auth("b"))
    assert metadata["name"] == "site-b" and metadata["versions"] == [SITE_A_VERSION]
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    outputs = {o["name"]: o for o in metadata["outputs"]}
    assert set(outputs) == {"probabilities", "predicted_class", "zero_shot", "head", "alpha"}
    assert outputs["probabilities"] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}
    assert metadata["classes"] == list(SITE_B_CLASSES)
    assert client.is_model_ready("site-b", headers=auth("b"))
    assert client.is_model_ready("site-b", model_version=SITE_A_VERSION, headers=auth("b"))
    assert not client.is_model_ready("site-b", model_version="v0999", headers=auth("b"))


@pytest.mark.parametrize("binary", [True, False], ids=["binary-outputs", "json-outputs"])
def test_infer_png_and_dicom_equals_v1_predict(server, client, binary):
    images = (png_bytes(), dicom_bytes(), jpeg_bytes())
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("probabilities", "zero_shot")]
    outputs += [triton.InferRequestedOutput(name, binary_data=binary) for name in ("head", "alpha")]
    outputs.append(triton.InferRequestedOutput("predicted_class", binary_data=binary))
    result = client.infer("site-a", [image_input(*images)], outputs=outputs, headers=auth("all"))
    expected = v1_predict(server, "site-a", "all", *images)

    response = result.get_response()
    assert response["model_name"] == "site-a" and response["model_version"] == expected["bundle_version"]
    classes = expected["classes"]
    for name, v1_field in (("probabilities", "probabilities"), ("zero_shot", "zero_shot"), ("head", "head")):
        got = result.as_numpy(name)
        assert got.dtype == np.float32 and got.shape == (3, len(classes))
        want = np.array([[p[v1_field][c] for c in classes] for p in expected["predictions"]], dtype=np.float32)
        np.testing.assert_array_equal(got, want)  # the same data plane: bit-identical, not merely close
    np.testing.assert_array_equal(
        result.as_numpy("alpha"), np.array([p["alpha"] for p in expected["predictions"]], dtype=np.float32)
    )
    # tritonclient gives bytes for binary BYTES outputs and str for JSON ones.
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("predicted_class")]
    assert labels == [p["predicted_class"] for p in expected["predictions"]]


def test_all_outputs_by_default_and_id_echoed(client):
    result = client.infer("site-b", [image_input(png_bytes())], request_id="req-7", headers=auth("b"))
    response = result.get_response()
    assert response["id"] == "req-7"
    names = {o["name"] for o in response["outputs"]}
    assert names == {"probabilities", "predicted_class", "zero_shot", "head", "alpha"}
    assert result.as_numpy("probabilities").sum() == pytest.approx(1.0, abs=1e-5)


def test_classification_extension_gives_score_index_label(client):
    outputs = [triton.InferRequestedOutput("probabilities", class_count=2)]
    image = png_bytes(colour=(10, 200, 90))
    ranked = client.infer("site-a", [image_input(image)], outputs=outputs, headers=auth("a"))
    plain = client.infer("site-a", [image_input(image)], headers=auth("a"))
    classes = client.get_model_metadata("site-a", headers=auth("a"))["classes"]
    probs = plain.as_numpy("probabilities")[0]
    top = ranked.as_numpy("probabilities")
    assert top.shape == (1, 2)
    entries = [item.decode().split(":", 2) for item in top[0]]
    order = np.argsort(-probs, kind="stable")[:2]
    assert [int(index) for _, index, _ in entries] == order.tolist()
    assert [label for _, _, label in entries] == [classes[i] for i in order]
    assert [float(score) for score, _, _ in entries] == pytest.approx(probs[order].tolist(), abs=1e-6)


def test_version_pinning(client):
    result = client.infer("site-a", [image_input(png_bytes())], model_version=SITE_A_VERSION, headers=auth("a"))
    assert result.get_response()["model_version"] == SITE_A_VERSION
    with pytest.raises(InferenceServerException) as caught:
        client.infer("site-a", [image_input(png_bytes())], model_version="v0002", headers=auth("a"))
    assert caught.value.status() == "404"
    assert "does not serve version 'v0002'" in caught.value.message()
    assert "'v0001'" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("site-a", model_version="v0002", headers=auth("a"))
    assert caught.value.status() == "404"


def _error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_keys_and_site_scoping(client):
    png = image_input(png_bytes())
    missing = _error(lambda: client.infer("site-a", [png]))
    assert missing.status() == "401" and "missing API key" in missing.message()
    wrong = _error(lambda: client.infer("site-a", [png], headers={"X-API-Key": "fmc_not-a-key"}))
    assert wrong.status() == "401" and "invalid API key" in wrong.message()
    scoped = _error(lambda: client.infer("site-a", [png], headers=auth("b")))
    assert scoped.status() == "403" and "may not use site 'site-a'" in scoped.message()
    # A key scoped elsewhere learns nothing about whether a site exists.
    assert _error(lambda: client.get_model_metadata("no-such-site", headers=auth("b"))).status() == "403"
    assert _error(lambda: client.get_model_metadata("no-such-site", headers=auth("all"))).status() == "404"
    empty = _error(lambda: client.infer("site-empty", [png], headers=auth("all")))
    assert empty.status() == "409" and "no verified bundle" in empty.message()


def test_bad_inputs_get_clear_errors(client):
    def infer(*inputs, **kwargs):
        return client.infer("site-a", list(inputs), headers=auth("a"), **kwargs)

    not_image = _error(lambda: infer(image_input(b"GIF89a not an image")))
    assert not_image.status() == "415" and "not a PNG, JPEG or DICOM image" in not_image.message()
    broken = _error(lambda: infer(image_input(png_bytes()[:40])))
    assert broken.status() == "422" and "image[0]" in broken.message()
    too_many = _error(lambda: infer(image_input(*[png_bytes()] * 5)))
    assert too_many.status() == "413" and "the limit is 4" in too_many.message()
    wrong_name = triton.InferInput("pixels", [1], "BYTES")
    wrong_name.set_data_from_numpy(np.array([png_bytes()], dtype=np.object_))
    assert "unexpected input(s) ['pixels']" in _error(lambda: infer(wrong_name)).message()
    wrong_type = triton.InferInput("image", [1, 3], "FP32")
    wrong_type.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    error = _error(lambda: infer(wrong_type))
    assert error.status() == "400" and "must be BYTES" in error.message()
    unknown_output = _error(lambda: infer(image_input(png_bytes()), outputs=[triton.InferRequestedOutput("logits")]))
    assert unknown_output.status() == "400" and "unknown output(s) ['logits']" in unknown_output.message()
    no_head = _error(
        lambda: infer(image_input(png_bytes()), outputs=[triton.InferRequestedOutput("alpha", class_count=1)])
    )
    assert "classification applies to" in no_head.message()


_LYING_SIZE = (
    b'{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 99}}]}'
)


def test_malformed_bodies_over_raw_http(server):
    """What tritonclient never sends but a hand-written client might: each a 4xx with the protocol's body."""
    url = f"{server.url}/v2/models/site-a/infer"
    headers = auth("a")
    png = png_bytes()
    cases = [
        (b"{not json", {}),
        (b'{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]}', {}),
        (b'{"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["aGk="]}]}', {}),
        (b'{"inputs": [{"name": "image", "shape": [1, 2], "datatype": "BYTES", "data": ["aGk=", "aGk="]}]}', {}),
        (_LYING_SIZE + b"\x05\x00\x00\x00abc", {"Inference-Header-Content-Length": str(len(_LYING_SIZE))}),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "9999"}),
    ]
    for body, extra in cases:
        response = httpx.post(url, content=body, headers={**headers, **extra}, timeout=30)
        assert response.status_code == 400, (body, response.text)
        assert set(response.json()) == {"error"} and response.json()["error"], response.text
    # An element count that the binary data does not hold.
    header = (
        b'{"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": %d}}]}'
    )
    blob = len(png).to_bytes(4, "little") + png
    head = header % len(blob)
    response = httpx.post(
        url, content=head + blob, headers={**headers, "Inference-Header-Content-Length": str(len(head))}, timeout=30
    )
    assert response.status_code == 400 and "ends before element 1" in response.json()["error"]
    # The JSON form with base64 data works for a hand-written client too.
    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(png).decode()]}]}
    response = httpx.post(url, json=body, headers=headers, timeout=30)
    assert response.status_code == 200 and response.json()["model_version"] == SITE_A_VERSION
    gzip = httpx.post(url, content=b"{}", headers={**headers, "Content-Encoding": "gzip"}, timeout=30)
    assert gzip.status_code == 415 and "not supported" in gzip.json()["error"]


def test_a_json_only_body_over_its_cap_is_refused_while_it_arrives():
    """Without Inference-Header-Content-Length the body is base64 JSON: refused as soon as it passes 32 MiB,
    not read whole first, so a larger max_request_bytes does not let it grow further."""
    import asyncio

    from inference_api import oip
    from inference_api.errors import BadRequestError

    sent = 0

    async def chunks():
        nonlocal sent
        for _ in range(64):  # 64 MiB offered
            sent += 1
            yield bytes(1024 * 1024)

    with pytest.raises(BadRequestError, match="binary tensor data"):
        asyncio.run(oip.read_body(chunks(), None, max_images=4))
    assert sent == 33  # stopped at the first chunk over 32 MiB
