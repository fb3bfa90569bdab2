"""The FastAPI app: the draw-a-digit page, its run report, and the prediction API.

    GET  /              the page (static/index.html; scripts and styles from /static only)
    GET  /report        report.html beside the model file, for the page's second tab
    GET  /health        {"status": "ok"}
    GET  /model         kind, classes, input shape, test accuracy from training
    POST /predict       a PNG/JPEG (raw body or multipart field "file") or JSON pixels
    GET  /openapi.json  the schema of all of the above

The model is loaded once, here, with the safe loader (safetensors; never
pickle). Decoding and predicting are CPU work, so they run in worker threads,
not on the event loop: one slow picture does not stall other clients.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.to_thread
import python_multipart  # noqa: F401  -- uploads need it; fail at start, not on the first upload
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from digitlab import __version__
from digitlab.calibration import calibration_of, temperature_of
from digitlab.explain import explain_predictions, map_as_lists
from digitlab.io import ModelInfo, load_model
from digitlab.models import DigitClassifier
from digitlab.predict import Prediction, check_min_confidence, read_images
from digitlab.preparation import warn_if_pictures_differ
from digitlab.web import MAX_BODY_BYTES
from digitlab.web.errors import InputError, install_error_handlers
from digitlab.web.inputs import (
    FORM_TYPE,
    IMAGE_TYPES,
    JSON_TYPE,
    model_image,
    parse_pixels,
    pixels_image,
    read_payload,
)
from digitlab.web.limits import BodyLimit
from digitlab.web.schemas import (
    ErrorResponse,
    ExplanationResponse,
    HealthResponse,
    ModelResponse,
    PixelsRequest,
    PredictionResponse,
)

STATIC = Path(__file__).parent / "static"

# Threads that decode and predict at once. The work holds the GIL most of the time, so
# more threads only fight over it: with two, 50 clients got 73 predictions/s (p99 0.68 s)
# where the default pool of 40 threads gave 57 (p99 1.0 s) on 2 cores (bench_serve.py).
CPU_THREADS = 2

# The page loads nothing from other hosts; say so to the browser too.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "frame-src 'self'; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
}

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": why}
    for status, why in [
        (400, "empty body, malformed JSON or a broken multipart upload"),
        (413, "body larger than the limit"),
        (415, "a content type /predict does not read"),
        (422, "not a PNG/JPEG, truncated, too many pixels, blank, or bad pixel values"),
    ]
}

# Below it the answer is "unknown"; absent, the server's --min-confidence.
Threshold = Annotated[float | None, Query(ge=0, le=1, allow_inf_nan=False, description=(
    "answer unknown (label null) when the largest probability is below this, 0 to 1"))]

Explain = Annotated[bool | None, Query(description=(
    "also answer why: `explanation`, the attribution map of the predicted class over `input`"))]


ERRORS_404 = {"model": ErrorResponse, "description": "no report.html beside the model file"}

BINARY = {"schema": {"type": "string", "format": "binary"}}
PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            **{kind: BINARY for kind in IMAGE_TYPES},
            FORM_TYPE: {"schema": {"type": "object", "required": ["file"],
                                   "properties": {"file": {"type": "string", "format": "binary"}}}},
            JSON_TYPE: {"schema": PixelsRequest.model_json_schema()},
        },
    }
}


def create_app(
    model_path: str | os.PathLike[str], *, max_body_bytes: int = MAX_BODY_BYTES,
    min_confidence: float = 0.0,
) -> FastAPI:
    """The app serving the model at ``model_path`` (a DataError if it cannot be loaded);
    ``min_confidence`` is the threshold for "unknown" when a request names none."""
    check_min_confidence(min_confidence)
    model_path = Path(model_path)
    model, info = load_model(model_path)
    warn_if_pictures_differ(info)  # the page's pictures are normalised: can this model read them?
    about = describe_model(info, model_path, min_confidence)
    app = FastAPI(
        title="digitlab",
        version=__version__,
        description=f"Reads handwritten digits with a {info.kind} model. Errors are JSON "
        f'{{"error": "..."}}; request bodies are limited to {max_body_bytes:,} bytes.',
        docs_url=None, redoc_url=None,  # both load their scripts from a CDN; the page is offline
    )
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    cpu = anyio.CapacityLimiter(CPU_THREADS)  # shared by all of this app's requests
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/report", response_class=FileResponse, responses={404: ERRORS_404},
             summary="the training run's report.html, from beside the model file")
    async def report() -> FileResponse:
        path = model_path.parent / "report.html"
        if not path.is_file():
            raise InputError(404, f"no report.html beside {model_path.name}: train with "
                             "`digitlab train --out` or write one with `digitlab inspect`")
        return FileResponse(path, media_type="text/html")

    @app.get("/health")
    async def health() -> HealthResponse:
        return HealthResponse(status="ok")

    @app.get("/model")
    async def model_route() -> ModelResponse:
        return about

    # exclude_unset: `explanation` is left out, not null, when it was not asked for.
    @app.post("/predict", responses=ERRORS, openapi_extra=PREDICT_BODY,
              response_model_exclude_unset=True,
              summary="read the digit in a picture or a pixel array")
    async def predict(
        request: Request, min_confidence: Threshold = None, explain: Explain = None,
    ) -> PredictionResponse:
        kind, body = await read_payload(request)
        return await anyio.to_thread.run_sync(predict_body, model, info, kind, body,
                                              min_confidence, about.min_confidence, explain,
                                              limiter=cpu)

    return app


def predict_body(
    model: DigitClassifier, info: ModelInfo, kind: str, body: bytes,
    asked: float | None = None, default: float = 0.0, explain: bool | None = None,
) -> PredictionResponse:
    """What the model reads in one request's body; ``asked`` and ``explain`` are the query's."""
    if kind == "json":
        request = parse_pixels(body)
        image = pixels_image(request, info)
        asked = once("min_confidence", asked, request.min_confidence)
        explain = once("explain", explain, request.explain)
    else:
        image = model_image(kind, body, info)  # (h, w) uint8, the model's input shape
    threshold = default if asked is None else asked
    reading = read_images(model, info, image[None], min_confidence=threshold)[0]
    answer = PredictionResponse(label=reading.label, name=reading.name,
                                probabilities=reading.probabilities, min_confidence=threshold,
                                classes=list(info.classes), input=image.tolist())
    if explain:
        seen = Prediction("upload", reading.label, reading.name, reading.probabilities, image)
        why = explain_predictions(model, [seen])[0]
        answer.explanation = ExplanationResponse(
            method=why.method, map=map_as_lists(why.map))
    return answer


def once(name: str, query: Any, body: Any) -> Any:
    """The option given in the query or in the JSON body (None: neither); a 422 if both differ."""
    if None not in (query, body) and query != body:
        raise InputError(422, f"{name} given twice, {json.dumps(query)} in the query and "
                         f"{json.dumps(body)} in the body: give one")
    return body if body is not None else query


def describe_model(info: ModelInfo, model_path: Path, min_confidence: float = 0.0) -> ModelResponse:
    """What GET /model answers: read once, when the app is made."""
    return ModelResponse(
        kind=info.kind, classes=list(info.classes),
        class_names=info.class_names or [str(c) for c in info.classes],
        input_shape=list(info.input_shape), task=str(info.extra.get("task", "all")),
        test_accuracy=training_accuracy(info, model_path),
        temperature=temperature_of(calibration_of(info)), min_confidence=min_confidence,
        preprocessing=dict(info.preprocessing),
        provenance=provenance if isinstance(provenance := info.extra.get("provenance"), dict) else None,
    )


def training_accuracy(info: ModelInfo, model_path: Path) -> float | None:
    """Test accuracy from metrics.json beside the model, else as stored in the model file."""
    try:
        metrics = json.loads((model_path.parent / "metrics.json").read_text(encoding="utf-8"))
        return float(metrics["test"]["accuracy"])
    except (OSError, ValueError, KeyError, TypeError):
        stored = info.extra.get("test_accuracy")
        return float(stored) if isinstance(stored, int | float) else None
