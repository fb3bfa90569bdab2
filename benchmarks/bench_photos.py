"""Photos as people take them: a CNN's accuracy on photo-like digits, per kind of picture.

    digitlab train --data /work/data/mnist --model cnn --out /tmp/photo-cnn   # ~99.4%
    python benchmarks/bench_photos.py --model /tmp/photo-cnn/model.safetensors --data /work/data/mnist
    python benchmarks/bench_photos.py --quick      # a CNN trained on the bundled sample, 50 per kind

Each of the first N test digits of ``--data`` (MNIST's test split: never
trained on) becomes a photo-like RGB picture of every kind of
:mod:`digitlab.data.photolike` (plain paper, shadow, pencil, ruled notebook
paper with blue ballpoint, ...; seeded). Each picture is read as
``digitlab predict`` reads a PNG file: greyscale as Pillow converts it,
normalised by :func:`digitlab.predict.prepare_image`, then the model.

Four normalisations side by side, on the same pictures:

- ``before``: without :func:`digitlab.data.ink.clean_paper` (the normalisation
  before issue 19);
- ``lighting``: only its shadow removal (:func:`~digitlab.data.ink.even_lighting`);
- ``lines``: only its printed-line removal (:func:`~digitlab.data.ink.without_printed_lines`);
- ``after``: both, as ``digitlab predict`` does now.

One RESULT row per kind (after vs before, target >= 97%), and one for the
time to normalise a picture (after vs before; target: at most 50 ms, quick
enough for one picture at a time).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
from _results import report  # benchmarks/ is sys.path[0] when run as a script
from PIL import Image

from digitlab.data import ink, sources
from digitlab.data.photolike import KINDS, photo_like_set
from digitlab.data.preprocess import to_greyscale
from digitlab.errors import DataError
from digitlab.io import load_model
from digitlab.predict import prepare_image, read_images
from digitlab.run import RunConfig, train

TARGET = 0.97
_CLEAN_PAPER = ink.clean_paper
VARIANTS = {
    "before": lambda grey: grey,
    "lighting": functools.partial(_CLEAN_PAPER, lines=False),
    "lines": functools.partial(_CLEAN_PAPER, lighting=False),
    "after": _CLEAN_PAPER,
}


def read(model, info, greys: list[np.ndarray], clean) -> tuple[np.ndarray, float]:
    """Labels read (-1: no digit found) and the seconds per picture spent normalising."""
    images, found = [], []
    start = time.perf_counter()
    with mock.patch.object(ink, "clean_paper", clean):
        for i, grey in enumerate(greys):
            try:
                images.append(prepare_image(grey, info, source=f"photo {i}"))
                found.append(i)
            except DataError:
                pass
    seconds = (time.perf_counter() - start) / len(greys)
    labels = np.full(len(greys), -1)
    if images:
        labels[found] = [r.label for r in read_images(model, info, np.stack(images))]
    return labels, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="a 28x28 MNIST model file (default: a CNN trained here on --data, seed 0)")
    parser.add_argument("--data", default="mnist-sample",
                        help="digits whose test split is used (the full MNIST: an IDX folder)")
    parser.add_argument("--n", type=int, default=500, help="pictures per kind")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--quick", action="store_true", help="50 pictures per kind")
    args = parser.parse_args()
    if args.quick:
        args.n = 50

    with tempfile.TemporaryDirectory() as folder:
        if args.model is None:  # as `digitlab train --data DATA --model cnn` trains it
            print(f"training a CNN on {args.data} ...", flush=True)
            train(RunConfig(data=args.data, model="cnn", seed=0), Path(folder) / "run")
            args.model = Path(folder) / "run" / "model.safetensors"
        model, info = load_model(args.model)
    dataset = sources.load(args.data)
    digits, truth = dataset.test_images[: args.n], dataset.test_labels[: args.n]
    print(f"{len(digits)} test digits of {args.data} per kind; model {args.model}")
    print(f"{'kind':<12}" + "".join(f"{v:>10}" for v in VARIANTS) + "   ms before / after")
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for k, kind in enumerate(KINDS):
        photos = photo_like_set(digits, kind, rng=args.seed * 100 + k)
        greys = [to_greyscale(Image.fromarray(photo)) for photo in photos]  # as predict reads a PNG
        accuracy = {}
        for variant, clean in VARIANTS.items():
            labels, seconds = read(model, info, greys, clean)
            accuracy[variant] = float(np.mean(labels == truth))
            times[variant].append(seconds)
        print(f"{kind:<12}" + "".join(f"{accuracy[v]:>10.1%}" for v in VARIANTS)
              + f"   {times['before'][-1] * 1e3:.1f} / {times['after'][-1] * 1e3:.1f}", flush=True)
        report(f"photos {kind}: accuracy after vs before issue 19's normalisation (%)",
               digitlab=round(100 * accuracy["after"], 1), reference=round(100 * accuracy["before"], 1),
               unit="%", ratio=round(accuracy["after"] / max(accuracy["before"], 1e-9), 2),
               target=f">= {TARGET:.0%}", met=accuracy["after"] >= TARGET,
               note=f"n={len(digits)}; lighting only {accuracy['lighting']:.1%}, "
                    f"lines only {accuracy['lines']:.1%}")
    before, after = float(np.mean(times["before"])), float(np.mean(times["after"]))
    print(f"normalising one picture: {before * 1e3:.1f} ms before, {after * 1e3:.1f} ms after")
    report("photos: time to normalise one picture, after vs before (ms)",
           digitlab=round(after * 1e3, 2), reference=round(before * 1e3, 2), unit="ms",
           ratio=round(after / before, 2), target="<= 50 ms (interactive)", met=after <= 0.05,
           note="mean over every kind; pictures 220-640 px")


if __name__ == "__main__":
    main()
