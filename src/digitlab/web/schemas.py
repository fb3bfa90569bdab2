"""The JSON shapes of the API: what /predict takes and what every route answers.

They double as the OpenAPI schema, which the fuzz test reads to generate
requests, so the constraints here (finite numbers from 0 to 255, no unknown
fields) are the API's documented contract, not just checks.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

MAX_SIDE = 1024
"""Longest side of a JSON pixel array; a picture larger than that should be sent as PNG."""

Pixel = Annotated[float, Field(ge=0, le=255, allow_inf_nan=False)]


class PixelsRequest(BaseModel):
    """A digit as an array of grey levels, the dataset's way: ink 255 on a 0 background."""

    # strict: `true` is not a pixel value and "12" is not a number; forbid: a misspelt
    # "normalize" must not be silently ignored.
    model_config = ConfigDict(strict=True, extra="forbid")

    pixels: list[Annotated[list[Pixel], Field(min_length=1, max_length=MAX_SIDE)]] = Field(
        min_length=1, max_length=MAX_SIDE,
        description="rows of grey levels 0..255 (ink 255 on black); used as they are when "
        "the array has the model's input shape, else normalised MNIST-style first",
    )
    normalise: bool = Field(
        default=False,
        description="normalise MNIST-style (crop, 20x20 box, centre of mass) even when the "
        "array already has the model's input shape",
    )
    min_confidence: float | None = Field(
        default=None, ge=0, le=1, allow_inf_nan=False,
        description="answer unknown (label null) when the largest probability is below this; "
        "default: the ?min_confidence query parameter, else the server's --min-confidence",
    )
    explain: bool | None = Field(
        default=None, description="also answer why: the attribution map of the predicted "
        "class over the image the model saw; default: the ?explain query parameter, else false",
    )


class ExplanationResponse(BaseModel):
    method: str = Field(description="how the map was made (digitlab.explain): occlusion, "
                        "gradient-x-input or integrated-gradients, per model kind")
    map: list[list[float]] = Field(
        description="one signed value per pixel of `input`, row by row: positive where the "
        "ink supports the predicted class, negative where it argues against it, 0 no effect")


class PredictionResponse(BaseModel):
    label: int | None = Field(description="the predicted class; null when the model's "
                              "confidence is below min_confidence (unknown)")
    name: str = Field(description='the predicted class\'s name, or "unknown"')
    probabilities: list[float] = Field(description="one per class, in the order of `classes`, "
                                       "calibrated by the model's temperature")
    min_confidence: float = Field(description="the threshold this answer used")
    classes: list[int]
    input: list[list[int]] = Field(description="the uint8 image the model saw, row by row")
    explanation: ExplanationResponse | None = Field(
        default=None, description="why it read `input` so; only when explain=true was asked for")


class ModelResponse(BaseModel):
    kind: str
    classes: list[int]
    class_names: list[str]
    input_shape: list[int]
    task: str
    test_accuracy: float | None = Field(
        description="test accuracy measured when the model was trained, if known")
    temperature: float = Field(description="the temperature its probabilities are scaled by "
                               "(fitted on the validation split; 1 = none)")
    min_confidence: float = Field(description="the server's default threshold for unknown")
    preprocessing: dict[str, Any] = Field(
        default_factory=dict, description="how images become the model's input: size, "
        "deskewing, normalisation, the training images' appearance")
    provenance: dict[str, Any] | None = Field(
        default=None, description="where the model came from: the data and its splits, the "
        "class counts, the kept epoch and its validation figures, when, and library versions")


class HealthResponse(BaseModel):
    status: str


class ErrorResponse(BaseModel):
    error: str = Field(description="what was wrong with the request")
