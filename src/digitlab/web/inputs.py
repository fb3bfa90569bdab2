"""From an HTTP request to the uint8 image a model sees.

Three ways in, one way out:

- a PNG or JPEG as the raw body (``Content-Type: image/png`` or ``image/jpeg``),
- the same as a multipart upload in the field ``file`` (an HTML form, ``curl -F``),
- JSON ``{"pixels": [[...]], "normalise": false}``.

Pictures always get the MNIST-style normalisation of ``digitlab predict``
(greyscale, inverted when the paper is light, cropped, scaled into a 20x20
box, centred by centre of mass, resized to the model's input). JSON pixels
are the dataset's form already (ink 255 on black), so an array of the model's
input shape is used as it is, like ``digitlab predict --raw``; any other
shape, or ``"normalise": true``, is normalised like a picture.

Every problem is an :class:`~digitlab.web.errors.InputError` carrying the HTTP
status to answer.
"""

from __future__ import annotations

import numpy as np
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from digitlab.data.imagetree import MAX_PIXELS  # as for every picture: read from its header first
from digitlab.data.preprocess import decode_user_image
from digitlab.io import ModelInfo
from digitlab.predict import MAX_SIDE, as_trained, model_shape, normalise_for_model
from digitlab.web.errors import InputError, describe
from digitlab.web.schemas import PixelsRequest

IMAGE_TYPES = ("image/png", "image/jpeg")
FORM_TYPE = "multipart/form-data"
JSON_TYPE = "application/json"
ACCEPTED = ", ".join((*IMAGE_TYPES, FORM_TYPE, JSON_TYPE))
FORMATS = ("PNG", "JPEG")



def media_type(request: Request) -> str:
    """The request's content type without parameters, lower case ("" if none)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_payload(request: Request) -> tuple[str, bytes]:
    """The kind of body ("image" or "json") and its bytes, read within the body limit."""
    kind = media_type(request)
    if kind in IMAGE_TYPES:
        return "image", _non_empty(await request.body(), "empty body: send the PNG or JPEG bytes")
    if kind == JSON_TYPE:
        return "json", _non_empty(await request.body(), 'empty body: send {"pixels": [[...]]}')
    if kind == FORM_TYPE:
        return "image", await _uploaded_file(request)
    shown = f"content type {kind!r}" if kind else "no content type"
    raise InputError(415, f"{shown} is not accepted: send one of {ACCEPTED}")


async def _uploaded_file(request: Request) -> bytes:
    async with request.form(max_files=1, max_fields=8) as form:
        upload = form.get("file")
        if upload is None:
            raise InputError(422, "multipart upload has no field 'file' (curl -F file=@digit.png)")
        if not isinstance(upload, UploadFile):
            raise InputError(422, "the field 'file' must be a file upload, not text")
        return _non_empty(await upload.read(), "the uploaded file is empty")


def _non_empty(body: bytes, message: str) -> bytes:
    if not body:
        raise InputError(400, message)
    return body


def model_image(kind: str, body: bytes, info: ModelInfo) -> np.ndarray:
    """The uint8 image the model sees, of its input shape (CPU work: run it off the event loop)."""
    if kind == "image":
        grey = decode_user_image(body, source="upload", max_side=MAX_SIDE,
                                 max_pixels=MAX_PIXELS, formats=FORMATS)
        return as_trained(normalise_for_model(grey, info, source="upload"), info)
    return pixels_image(parse_pixels(body), info)


def pixels_image(request: PixelsRequest, info: ModelInfo) -> np.ndarray:
    """The uint8 image the model sees for a parsed JSON pixel array."""
    pixels = np.asarray(request.pixels, dtype=np.float64)  # rows already checked as numbers
    grey = np.rint(pixels).astype(np.uint8)  # finite and in 0..255 (the schema says so)
    if request.normalise or grey.shape != model_shape(info):
        grey = normalise_for_model(grey, info, source="pixels")
    # else already the dataset's form, as `digitlab predict --raw` takes it
    return as_trained(grey, info)


def parse_pixels(body: bytes) -> PixelsRequest:
    """The JSON body as a :class:`PixelsRequest`: 400 if it is not JSON, 422 if not ours."""
    try:
        request = PixelsRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid":
            reason = str(errors[0]["msg"]).removeprefix("Invalid JSON: ")
            raise InputError(400, f"malformed JSON: {reason}") from None
        raise InputError(422, "bad JSON body: " + describe(errors)) from None
    widths = {len(row) for row in request.pixels}
    if len(widths) > 1:
        raise InputError(422, f"bad pixels: rows of different lengths ({min(widths)} to "
                         f"{max(widths)}); send a rectangular array")
    return request
