"""How a model's images were prepared: recorded when it is trained, checked when it is used.

A model reads well only images prepared as its training images were. One
trained on dark-ink scans resized to 28x28 reports 98% on its own test split,
yet reads the same scans at 17% once ``digitlab predict`` has normalised them
MNIST-style (white ink on black, cropped and centred): every picture then
looks unlike anything it saw. ``digitlab train --normalise`` avoids that by
preparing training images with the very function predict uses; this module
makes the other case visible.

At training, the model file's ``preprocessing`` records (:func:`recorded_preparation`):

- ``"normalise"``: whether the training images were normalised as pictures are;
- ``"appearance"``: what the training images look like as the model sees
  them (:func:`appearance`): the background level (the median of each image's
  border, averaged; 0 black, 255 white) and the share of the frame the ink's
  bounding box spans, in height and width.

At use, images prepared for the model are measured the same way and compared
(:func:`differences`); a clear difference -- the background on the other side
of the grey scale (the ink's polarity), or digits filling a clearly different
share of the frame -- is one :class:`~digitlab.errors.DataWarning` line.
Model files written before this record was kept are not checked.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from digitlab.errors import DataWarning, show_path
from digitlab.io import ModelInfo

if TYPE_CHECKING:
    from digitlab.data.dataset import Dataset

INK_CONTRAST = 64
"""A pixel is ink when it differs from its image's background by this many levels."""
BACKGROUND_GAP = 64
"""Backgrounds further apart than this (a quarter of the grey scale) are prepared otherwise:
the same preparation gives backgrounds within a few levels; a flipped polarity, ~200 apart."""
BOX_GAP = 0.2
"""Ink boxes whose mean height differs by more than this share of the frame are prepared
otherwise (MNIST's digits span 20 of 28 rows, 0.71; a digit filling its scan, near 0.9)."""
SAMPLE = 2000
"""Images measured at most (evenly spaced): enough for a mean, cheap for 60,000."""
MIN_FOR_BOX = 10
"""Fewer images than this say little about the mean ink box (a 1 is narrow, an 8 is not)."""


NORMALISED_PICTURES: dict[str, Any] = {"background": 0.0, "ink_height": None, "ink_width": None,
                                       "images": 0}
"""What is known of every normalised picture before it is seen: paper becomes 0."""


def appearance(*stacks: np.ndarray) -> dict[str, Any]:
    """What uint8 image stacks ``(n, h, w)`` look like, as a JSON-ready dict.

    ``background``: the median of each image's one-pixel border, averaged
    over images (0..255). ``ink_height`` / ``ink_width``: the mean share of
    the frame (0..1) spanned by the bounding box of each image's ink (pixels
    :data:`INK_CONTRAST` or more away from its background), over images that
    have ink. ``images``: how many were measured.
    """
    total = sum(len(stack) for stack in stacks)
    step = max(1, -(-total // SAMPLE))  # every step-th image, across all stacks
    picked = [stack[::step] for stack in stacks if len(stack)]
    if not picked:
        return {"background": None, "ink_height": None, "ink_width": None, "images": 0}
    backgrounds, heights, widths = [], [], []
    for images in picked:
        h, w = images.shape[1:]
        border = np.concatenate([images[:, 0, :], images[:, -1, :], images[:, :, 0],
                                 images[:, :, -1]], axis=1)  # (m, 2w + 2h)
        background = np.median(border, axis=1)  # (m,)
        ink = np.abs(images.astype(np.int16) - background[:, None, None]) >= INK_CONTRAST
        rows, cols = ink.any(axis=2), ink.any(axis=1)  # (m, h), (m, w)
        has_ink = rows.any(axis=1)
        backgrounds.append(background)
        heights.append(_span(rows[has_ink]) / h)
        widths.append(_span(cols[has_ink]) / w)
    height, width = np.concatenate(heights), np.concatenate(widths)
    return {
        "background": round(float(np.concatenate(backgrounds).mean()), 1),
        "ink_height": round(float(height.mean()), 3) if height.size else None,
        "ink_width": round(float(width.mean()), 3) if width.size else None,
        "images": int(sum(len(images) for images in picked)),
    }


def _span(mask: np.ndarray) -> np.ndarray:
    """Rows (m, k) of booleans, each with a True: last True - first True + 1, float (m,)."""
    k = mask.shape[1]
    first = np.argmax(mask, axis=1)
    last = k - 1 - np.argmax(mask[:, ::-1], axis=1)
    return (last - first + 1).astype(np.float64)


def differences(trained: dict[str, Any], seen: dict[str, Any]) -> list[str]:
    """How ``seen`` images clearly differ from ``trained`` ones (both :func:`appearance`)."""
    found = []
    tb, sb = _number(trained.get("background")), _number(seen.get("background"))
    if tb is not None and sb is not None and abs(tb - sb) > BACKGROUND_GAP:
        found.append(f"their background is {_tone(sb)} ({sb:.0f}) where the training images' "
                     f"was {_tone(tb)} ({tb:.0f}): the ink's polarity differs")
    th, sh = _number(trained.get("ink_height")), _number(seen.get("ink_height"))
    if (th is not None and sh is not None and seen.get("images", 0) >= MIN_FOR_BOX
            and abs(th - sh) > BOX_GAP):
        found.append(f"their digits span {sh:.0%} of the frame's height where the training "
                     f"images' spanned {th:.0%}")
    return found


def _number(value: object) -> float | None:
    """A figure read from a model file's record: a number, else None (not checked)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _tone(level: float) -> str:
    return "light" if level >= 128 else "dark"


def dataset_preprocessing(
    dataset: Dataset, *, resized_to: int | None = None, deskew: bool = False, normalise: bool = False
) -> dict[str, Any]:
    """How raw images became ``dataset``'s features, as a model file stores it (``digitlab
    train`` passes its options; from Python, ``save_model(..., dataset=data)``)."""
    from digitlab.predict import layout_for  # predict imports this module

    return {
        "image_shape": list(dataset.image_shape),
        "resized_to": resized_to,
        "deskew": deskew,
        "features": "pixel / 255, flattened row by row",
        "ink": "255 on 0 background",
        "user_images": f"MNIST-style normalisation, layout {layout_for(dataset.image_shape)!r}",
        **recorded_preparation(normalise, dataset.train_images),
    }


def recorded_preparation(normalise: bool, train_images: np.ndarray) -> dict[str, Any]:
    """What a model file records of its training images' preparation (see the module doc)."""
    return {"normalise": bool(normalise), "appearance": appearance(train_images)}


def normalises(info: ModelInfo) -> bool:
    """Whether the model was trained on normalised images (``digitlab train --normalise``)."""
    return info.preprocessing.get("normalise") is True


def trained_appearance(info: ModelInfo) -> dict[str, Any] | None:
    """The model's record of its training images, or None (an older file, or unreadable)."""
    record = info.preprocessing.get("appearance")
    return record if isinstance(record, dict) else None


def warn_if_prepared_otherwise(info: ModelInfo, *stacks: np.ndarray, where: str) -> None:
    """One DataWarning when data prepared for the model (``evaluate``, ``inspect``) look
    otherwise than its training images did."""
    trained = trained_appearance(info)
    found = [] if trained is None else differences(trained, appearance(*stacks))
    if found:
        advice = "" if normalises(info) else (
            "; training with --normalise prepares every source alike")
        warnings.warn(f"{show_path(where)}: these images look prepared otherwise than the "
                      f"model's training images ({'; '.join(found)}), so its figures here may "
                      f"not hold{advice}", DataWarning, stacklevel=3)


def warn_if_pictures_differ(
    info: ModelInfo, images: np.ndarray | None = None, *, raw: bool = False
) -> None:
    """One DataWarning when pictures prepared for the model (``predict``) look otherwise
    than its training images did. Without ``images`` (``serve``, before any picture
    comes), the comparison is with what normalising gives every picture: a black background.

    Pictures are normalised MNIST-style unless ``raw``: a model trained on raw
    images unlike that (dark ink on light paper, say) cannot read them.
    """
    trained = trained_appearance(info)
    seen = NORMALISED_PICTURES if images is None else appearance(images)
    found = [] if trained is None else differences(trained, seen)
    if not found:
        return
    if raw or normalises(info):
        how = "these pictures look prepared otherwise than the model's training images"
        advice = ""
    else:
        how = ("the model was trained on raw images prepared otherwise than predict prepares "
               "pictures (MNIST-style: white ink on black, cropped and centred)")
        advice = "; retrain it with --normalise to read pictures"
    warnings.warn(f"{how} ({'; '.join(found)}), so it will read them poorly{advice}",
                  DataWarning, stacklevel=3)
