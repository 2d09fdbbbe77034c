"""The Open Inference Protocol (KServe v2) REST encoding of our one data plane: no FastAPI, no model code.

Each site is one model, named by the site; its version is the bundle version it serves. The model has one
input and up to five outputs:

- ``image`` (``BYTES``, shape ``[-1]`` or ``[-1, 1]``): encoded PNG, JPEG or DICOM files, one per element;
- ``probabilities``, ``zero_shot``, ``head`` (``FP32``, ``[-1, C]``): the ensemble and its two components
  (``head`` only for a site with a private head); ``alpha`` (``FP32``, ``[-1]``): the head's weight;
  ``predicted_class`` (``BYTES``, ``[-1]``): the ensemble's top class label.

Tensors travel either in the JSON body or, with the *binary tensor data* extension that tritonclient uses by
default, after it (the ``Inference-Header-Content-Length`` header gives the JSON's length). ``BYTES`` elements
are 4-byte little-endian lengths followed by the bytes in binary form, and base64 strings in JSON form (an
image is not UTF-8 text). A requested output with ``parameters.classification = k`` comes back as the
classification extension's ``"score:index:label"`` strings of the k best classes.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedmedclip import __version__
from fedmedclip.bundle import Bundle
from fedmedclip.model.ensemble import EnsembleOutput
from inference_api.decoding import Upload
from inference_api.errors import BadRequestError, TooManyImagesError

INPUT = "image"
PLATFORM = "fedmedclip_personalised_clip"
HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ("binary_tensor_data", "classification")
_PER_CLASS = ("probabilities", "zero_shot", "head")
_MAX_JSON_BYTES = 1024 * 1024  # the JSON part of an infer request: names, shapes, parameters, base64 data aside
_MAX_JSON_ONLY_BYTES = _MAX_JSON_BYTES * 32  # a JSON-only request, base64 images and all
_LENGTH = struct.Struct("<I")


# --- requests -----------------------------------------------------------------------------------------------


class _Tensor(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(max_length=200)
    shape: list[int] = Field(max_length=8)
    datatype: str = Field(max_length=20)
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class _Output(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(max_length=200)
    parameters: dict[str, Any] = Field(default_factory=dict)


class _InferBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(None, max_length=200)
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[_Tensor] = Field(max_length=16)
    outputs: list[_Output] | None = Field(None, max_length=16)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool
    classification: int = 0  # k > 0: the k best classes as "score:index:label"


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    uploads: list[Upload]
    outputs: list[RequestedOutput] | None  # None: every output the model has
    binary: bool  # the format of outputs returned without being asked for by name


def parse_infer_request(body: bytes, header_length: str | None, max_images: int) -> InferRequest:
    """An infer request's JSON (and binary tail) as uploads and requested outputs, or a clear 400/413."""
    json_part, binary = _split(body, header_length)
    try:
        request = _InferBody.model_validate_json(json_part)
    except ValidationError as error:
        raise BadRequestError(f"invalid inference request: {_first_problem(error)}") from error
    _reject_unsupported(request.parameters, "the request")
    images = [t for t in request.inputs if t.name == INPUT]
    others = sorted({t.name[:40] for t in request.inputs if t.name != INPUT})
    if others:
        raise BadRequestError(f"unexpected input(s) {others}; the model takes one BYTES input named {INPUT!r}")
    if len(images) != 1:
        raise BadRequestError(f"send exactly one input named {INPUT!r} (BYTES, one encoded image per element)")
    tensor = images[0]
    if tensor.datatype != "BYTES":
        raise BadRequestError(f"input {INPUT!r} must be BYTES (encoded PNG, JPEG or DICOM), not {tensor.datatype!r}")
    _reject_unsupported(tensor.parameters, f"input {INPUT!r}")
    count = _element_count(tensor.shape)
    if count > max_images:
        raise TooManyImagesError(f"{count} images in one request; the limit is {max_images}")
    size = tensor.parameters.get("binary_data_size")
    if size is not None:
        if tensor.data is not None:
            raise BadRequestError(f"input {INPUT!r} has both binary_data_size and JSON data")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or size != len(binary):
            raise BadRequestError(
                f"input {INPUT!r}: binary_data_size {size!r} does not match the {len(binary)} bytes after the JSON"
            )
        items = _unpack_bytes(binary, count)
    else:
        if binary:
            raise BadRequestError("binary data follows the JSON but no input declares binary_data_size")
        items = _base64_items(tensor.data, count)
    uploads = [Upload(f"{INPUT}[{i}]", data) for i, data in enumerate(items)]
    return InferRequest(
        id=request.id,
        uploads=uploads,
        outputs=None if request.outputs is None else [_requested(o) for o in request.outputs],
        binary=request.parameters.get("binary_data_output") is True,
    )


async def read_body(chunks: AsyncIterator[bytes], header_length: str | None, max_images: int) -> bytes:
    """The whole request body; with binary tensor data, the image count is checked from the JSON part as soon
    as it has arrived, so a request for 1,000 images is a 413 before its binary data is read."""
    try:
        length = int(header_length) if header_length is not None else 0
    except ValueError:
        length = 0  # parse_infer_request reports it with the whole body
    pending = 0 < length <= _MAX_JSON_BYTES
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        if header_length is None:
            _check_json_only_size(len(buffer))  # refused as it arrives, whatever max_request_bytes allows
        if pending and len(buffer) >= length:
            pending = False
            _check_count_early(bytes(buffer[:length]), max_images)
    return bytes(buffer)


def _check_count_early(json_part: bytes, max_images: int) -> None:
    try:
        request = _InferBody.model_validate_json(json_part)
    except ValidationError:
        return  # the full parse names the problem
    for tensor in request.inputs:
        if tensor.name == INPUT and tensor.shape and all(d >= 0 for d in tensor.shape):
            count = math.prod(tensor.shape)
            if count > max_images:
                raise TooManyImagesError(f"{count} images in one request; the limit is {max_images}")


def _check_json_only_size(size: int) -> None:
    if size > _MAX_JSON_ONLY_BYTES:
        raise BadRequestError("a JSON-only request this large should send the images as binary tensor data")


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        _check_json_only_size(len(body))
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 < length <= min(len(body), _MAX_JSON_BYTES):
        raise BadRequestError(
            f"Inference-Header-Content-Length must be the length of the JSON part (1..{len(body)} bytes here)"
        )
    return body[:length], body[length:]


def _element_count(shape: Sequence[int]) -> int:
    if not shape or any(d < 0 for d in shape) or len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise BadRequestError(f"input {INPUT!r} shape must be [N] or [N, 1], not {list(shape)}")
    return math.prod(shape)


def _unpack_bytes(binary: bytes, count: int) -> list[bytes]:
    """BYTES in the binary extension: each element a 4-byte little-endian length, then that many bytes."""
    items, offset = [], 0
    view = memoryview(binary)
    for i in range(count):
        if offset + 4 > len(binary):
            raise BadRequestError(f"input {INPUT!r}: binary data ends before element {i} of {count}")
        (length,) = _LENGTH.unpack_from(binary, offset)
        offset += 4
        if offset + length > len(binary):
            raise BadRequestError(f"input {INPUT!r}: element {i} claims {length} bytes, more than remain")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != len(binary):
        raise BadRequestError(f"input {INPUT!r}: {len(binary) - offset} bytes left over after {count} element(s)")
    return items


def _base64_items(data: Any, count: int) -> list[bytes]:
    flat = list(_flatten(data))
    if len(flat) != count or not all(isinstance(item, str) for item in flat):
        raise BadRequestError(
            f"input {INPUT!r}: JSON data must be {count} base64 string(s) (the shape says {count}), "
            "or send the images as binary tensor data"
        )
    try:
        return [base64.b64decode(item, validate=True) for item in flat]
    except (binascii.Error, ValueError) as error:
        raise BadRequestError(f"input {INPUT!r}: JSON data is not valid base64") from error


def _flatten(data: Any) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    elif data is not None:
        yield data


def _requested(output: _Output) -> RequestedOutput:
    _reject_unsupported(output.parameters, f"output {output.name[:40]!r}")
    k = output.parameters.get("classification", 0)
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise BadRequestError(f"output {output.name[:40]!r}: classification must be a non-negative integer")
    if k and output.name not in _PER_CLASS:
        raise BadRequestError(f"classification applies to {list(_PER_CLASS)}, not to {output.name[:40]!r}")
    return RequestedOutput(output.name, output.parameters.get("binary_data") is True, k)


def _reject_unsupported(parameters: dict[str, Any], where: str) -> None:
    if any(key.startswith("shared_memory") for key in parameters):
        raise BadRequestError(f"{where}: shared memory is not supported; send the data in the request")


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join(str(p) for p in problem.get("loc", ())) or "body"
    return f"{where}: {problem.get('msg', 'invalid')}"


# --- responses ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _OutTensor:
    name: str
    datatype: str
    shape: list[int]
    values: np.ndarray  # float32, or an object array of str


def output_names(bundle: Bundle) -> list[str]:
    names = ["probabilities", "predicted_class", "zero_shot"]
    return [*names, "head", "alpha"] if bundle.has_head else [*names, "alpha"]


def check_outputs(site: str, bundle: Bundle, request: InferRequest) -> list[RequestedOutput]:
    """The outputs to return, or a 400 naming those the model does not have."""
    available = output_names(bundle)
    requested = request.outputs or [RequestedOutput(name, request.binary) for name in available]
    unknown = [r.name[:40] for r in requested if r.name not in available]
    if unknown:
        raise BadRequestError(f"unknown output(s) {unknown}; site {site!r} has {available}")
    return requested


def infer_response(
    site: str, bundle: Bundle, output: EnsembleOutput, request: InferRequest
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the length of its JSON part."""
    classes = list(bundle.classes)
    requested = check_outputs(site, bundle, request)
    tensors, blobs = [], []
    for wanted in requested:
        tensor = _tensor(wanted, output, classes)
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if wanted.binary:
            blob = _binary(tensor)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = tensor.values.reshape(-1).tolist()
        tensors.append(entry)
    body: dict[str, Any] = {"model_name": site, "model_version": bundle.version, "outputs": tensors}
    if request.id is not None:
        body["id"] = request.id
    header = orjson.dumps(body)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _tensor(wanted: RequestedOutput, output: EnsembleOutput, classes: list[str]) -> _OutTensor:
    name = wanted.name
    if name == "alpha":
        values = _finite(output.alpha.numpy())
        return _OutTensor(name, "FP32", [len(values)], values)
    if name == "predicted_class":
        labels = np.array([classes[i] for i in output.probs.argmax(dim=1).tolist()], dtype=object)
        return _OutTensor(name, "BYTES", [len(labels)], labels)
    source = {"probabilities": output.probs, "zero_shot": output.zero_shot, "head": output.head}[name]
    assert source is not None  # "head" is only offered for bundles that have one
    probs = _finite(source.numpy())
    if not wanted.classification:
        return _OutTensor(name, "FP32", list(probs.shape), probs)
    k = min(wanted.classification, len(classes))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    rows = [[f"{probs[r, i]:f}:{i}:{classes[i]}" for i in row] for r, row in enumerate(order.tolist())]
    return _OutTensor(name, "BYTES", [len(rows), k], np.array(rows, dtype=object).reshape(len(rows), k))


def _finite(values: np.ndarray) -> np.ndarray:
    # JSON has no NaN and /v1 answers 0.0 for one; both faces must give the same numbers.
    return np.nan_to_num(values.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)


def _binary(tensor: _OutTensor) -> bytes:
    if tensor.datatype == "FP32":
        return np.ascontiguousarray(tensor.values, dtype="<f4").tobytes()
    parts = []
    for item in tensor.values.reshape(-1).tolist():
        encoded = item.encode("utf-8")
        parts += [_LENGTH.pack(len(encoded)), encoded]
    return b"".join(parts)


# --- metadata -----------------------------------------------------------------------------------------------


def server_metadata() -> dict[str, Any]:
    return {"name": "fedmedclip", "version": __version__, "extensions": list(EXTENSIONS)}


def model_metadata(site: str, bundle: Bundle) -> dict[str, Any]:
    n = len(bundle.classes)
    shapes = {"probabilities": [-1, n], "zero_shot": [-1, n], "head": [-1, n], "alpha": [-1], "predicted_class": [-1]}
    return {
        "name": site,
        "versions": [bundle.version],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": name, "datatype": "BYTES" if name == "predicted_class" else "FP32", "shape": shapes[name]}
            for name in output_names(bundle)
        ],
        # Not part of the protocol's metadata; clients ignore it, people and our tests read the labels here.
        "classes": list(bundle.classes),
    }
