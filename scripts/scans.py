"""A team's scans end to end: the same preparation in training and prediction (issue 13).

    python scripts/scans.py [--count 2000] [--model softmax] [--out runs/scans]

Real digits from the bundled MNIST sample are re-saved as a team's data looks:
a flat folder of JPEG scans of varied sizes, dark ink on light paper, with a
``labels.csv`` of ``filename,label``. Then, through the command line:

- **before** (what the issue did): the scans resized to 28x28 with their dark
  ink kept, trained on raw; ``predict`` on the scans normalises them
  MNIST-style, which the model never saw;
- **after**: ``train --normalise`` on the scans themselves, so the training
  images get exactly the preparation ``predict`` gives pictures.

For each it prints the test accuracy ``train`` reports, the accuracy of
``predict`` on all the scans and on the held-out (test) scans alone, and
whether ``predict`` warned. :func:`write_scans` is also what
tests/test_normalise.py builds its small scans with.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIDES = (64, 200)  # the scans: 64-200 px


def write_scans(
    folder: Path, images: np.ndarray, labels: np.ndarray, *, seed: int = 0,
    sides: tuple[int, int] = SIDES,
) -> list[str]:
    """Save uint8 MNIST-style digits ``(n, 28, 28)`` as JPEG scans with a labels.csv.

    Each scan is ``h x w`` with sides drawn from ``sides``: light paper
    (levels 200-250, grain of 3 levels) with the digit in dark ink (levels
    10-70), scaled to fill 70-100% of the shorter side and placed roughly in
    the middle. Returns the file names, in the labels file's order.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, (digit, _label) in enumerate(zip(images, labels.tolist(), strict=True)):
        h, w = (int(side) for side in rng.integers(sides[0], sides[1] + 1, size=2))
        paper, ink = rng.uniform(200, 250), rng.uniform(10, 70)
        page = paper + rng.normal(0, 3, size=(h, w))
        side = max(8, int(min(h, w) * rng.uniform(0.7, 1.0)))
        coverage = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR),
                              dtype=np.float64) / 255.0  # (side, side), 1 = ink
        # roughly centred, as a scanned form's box holds it: anywhere in the middle half of the room
        top = (h - side) // 4 + int(rng.integers(0, (h - side) // 2 + 1))
        left = (w - side) // 4 + int(rng.integers(0, (w - side) // 2 + 1))
        window = page[top : top + side, left : left + side]
        window -= (window - ink) * coverage
        name = f"scan_{i:05d}.jpg"
        Image.fromarray(np.clip(np.rint(page), 0, 255).astype(np.uint8)).save(folder / name, quality=85)
        names.append(name)
    write_labels(folder / "labels.csv", names, labels)
    return names


def write_labels(path: Path, names: list[str], labels: np.ndarray) -> None:
    lines = ["filename,label", *(f"{n},{label}" for n, label in zip(names, labels.tolist(), strict=True))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def resized_copy(scans: Path, folder: Path, names: list[str], labels: np.ndarray) -> None:
    """The scans resized to 28x28, dark ink kept: what the issue did to get past "all must match"."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        with Image.open(scans / name) as scan:
            scan.convert("L").resize((28, 28), Image.Resampling.BOX).save(folder / name.replace(".jpg", ".png"))
    write_labels(folder / "labels.csv", [n.replace(".jpg", ".png") for n in names], labels)


def run(argv: list[str]) -> tuple[int, str, list[str]]:
    """``digitlab.cli.main(argv)``: the exit code, what it printed, and its warnings."""
    from digitlab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), [line for line in err.getvalue().splitlines() if "warning:" in line]


def measure(model: str, data: Path, scans: Path, names: list[str], labels: np.ndarray,
            test: np.ndarray, out: Path, *, normalise: bool) -> dict[str, object]:
    started = time.perf_counter()
    argv = ["train", "--data", str(data), "--model", model, "--out", str(out), "--quiet"]
    code, _, _ = run(argv + (["--normalise"] if normalise else []))
    assert code == 0, "training failed"
    seconds = time.perf_counter() - started
    reported = json.loads((out / "metrics.json").read_text())["test"]["accuracy"]
    code, printed, warned = run(["predict", str(out / "model.safetensors"), str(scans), "--json"])
    assert code == 0, "predict failed"
    read = {Path(r["path"]).name: r["label"] for r in json.loads(printed)}
    right = np.array([read[name] == label for name, label in zip(names, labels.tolist(), strict=True)])
    return {"reported_test_accuracy": reported, "predict_accuracy_all": float(right.mean()),
            "predict_accuracy_test": float(right[test].mean()), "predict_warned": warned,
            "train_seconds": round(seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="scans to make")
    parser.add_argument("--model", default="softmax")
    parser.add_argument("--out", type=Path, default=Path("runs/scans"))
    args = parser.parse_args()

    from digitlab.data.sources import load_mnist_sample
    from digitlab.splits import stratified_holdout

    sample = load_mnist_sample()
    images, labels = sample.train_images[: args.count], sample.train_labels[: args.count]
    scans, resized = args.out / "scans", args.out / "resized"
    names = write_scans(scans, images, labels)
    resized_copy(scans, resized, names, labels)
    # The scans `train` held out (its stratified hold-out of 20% with seed 0, in file order).
    test = np.zeros(len(labels), dtype=bool)
    test[stratified_holdout(labels, 0.2, 0)[1]] = True
    results = {
        "before (resized to 28x28, trained raw)": measure(
            args.model, resized, scans, names, labels, test, args.out / "raw", normalise=False),
        "after (train --normalise on the scans)": measure(
            args.model, scans, scans, names, labels, test, args.out / "normalised", normalise=True),
    }
    print(f"{args.count} scans, {SIDES[0]}-{SIDES[1]} px, dark ink on light paper; model {args.model}")
    for name, figures in results.items():
        print(f"{name}: test accuracy reported {figures['reported_test_accuracy']:.1%}; predict on the "
              f"scans {figures['predict_accuracy_all']:.1%} (held-out scans "
              f"{figures['predict_accuracy_test']:.1%}); trained in {figures['train_seconds']} s")
        for line in figures["predict_warned"]:  # type: ignore[attr-defined]
            print(f"    predict said: {line}")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
