"""Time what a user waits for outside any training: start-up, a run's own work, batch predict.

Three rows, each timed in this one run beside its reference (whole commands, in
fresh processes, the median of a few runs):

1. ``digitlab --help`` against ``python -c "import sklearn"`` (scikit-learn's
   import alone). Target: at most 0.3 s.
2. ``digitlab train --data fashion-mnist --model majority --out DIR``: loading,
   evaluation, figures, report and model file around a fit that takes no time,
   against the imports any run needs (scikit-learn for the estimators,
   matplotlib for the figures). Target: at most 1.5 s, whole command.
   (Fashion-MNIST from Debian's dataset-fashion-mnist; the decoded arrays
   are cached after the first run, which is not timed.)
3. ``digitlab predict MODEL FOLDER --csv`` on 1,000 28x28 PNGs (the bundled
   sample, dark ink on white paper, so every one is normalised): images per
   second after start-up, ``(N - 1) / (time for N - time for 1)``, against a
   plain Pillow decode loop over the same files. Target: at least 5,000/s.
   The two commands run in turn, ``2 x repeats - 1`` times each, and the
   median of the pairs' differences is used: the difference (0.1-0.2 s) is
   small beside either command (about 1.1 s), and a burst of other work
   during one command of a pair would otherwise move it by half.

    python benchmarks/bench_startup.py           # five runs of each (about a minute)
    python benchmarks/bench_startup.py --quick   # two runs of each, 300 pictures
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import report  # benchmarks/ is sys.path[0] when run as a script
from PIL import Image

FASHION = Path("/usr/share/datasets/fashion-mnist")
DIGITLAB = [sys.executable, "-m", "digitlab.cli"]
HELP_TARGET, TRAIN_TARGET, PREDICT_TARGET = 0.3, 1.5, 5_000.0


def wall(command: list[str], repeats: int) -> float:
    """Median wall time of ``command`` in seconds (it must succeed)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def paired_difference(first: list[str], second: list[str], pairs: int) -> tuple[float, float, float]:
    """Median wall time of ``first`` and of ``second``, run in turn ``pairs`` times, and
    the median of the pairs' differences (``first`` - ``second``)."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(pairs):
        for command, kept in zip((first, second), times, strict=True):
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            kept.append(time.perf_counter() - started)
    return (statistics.median(times[0]), statistics.median(times[1]),
            statistics.median(a - b for a, b in zip(*times, strict=True)))


def bench_help(repeats: int) -> None:
    ours = wall([*DIGITLAB, "--help"], repeats)
    sklearn = wall([sys.executable, "-c", "import sklearn"], repeats)
    print(f"digitlab --help {ours:.3f} s; python -c 'import sklearn' {sklearn:.3f} s")
    report("start-up: digitlab --help vs import sklearn", digitlab=ours, reference=sklearn,
           unit="s", ratio=ours / sklearn, target=f"<= {HELP_TARGET} s", met=ours <= HELP_TARGET)


def bench_train(repeats: int, work: Path) -> None:
    if not FASHION.is_dir():
        print(f"skipping the train row: {FASHION} is missing (apt install dataset-fashion-mnist)")
        return
    command = [*DIGITLAB, "train", "--data", "fashion-mnist", "--model", "majority", "--quiet"]
    subprocess.run([*command, "--out", str(work / "warm")], check=True)  # fills the decoded cache
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        subprocess.run([*command, "--out", str(work / f"run{i}")], check=True)
        times.append(time.perf_counter() - started)
    ours = statistics.median(times)
    floor = wall([sys.executable, "-c", "import sklearn.base, matplotlib.figure"], repeats)
    print(f"train --model majority on Fashion-MNIST {ours:.2f} s whole command "
          f"(runs: {', '.join(f'{t:.2f}' for t in times)}); importing scikit-learn and "
          f"matplotlib alone {floor:.2f} s")
    report("train --model majority, Fashion-MNIST, whole command", digitlab=ours, reference=floor,
           unit="s", ratio=ours / floor, target=f"<= {TRAIN_TARGET} s", met=ours <= TRAIN_TARGET,
           note="reference: import sklearn.base, matplotlib.figure")


def write_pictures(folder: Path, n: int) -> list[Path]:
    """``n`` 28x28 PNGs of the bundled sample's digits, dark ink on white paper."""
    from digitlab.data.sources import load

    sample = load("mnist-sample")
    images = np.concatenate([sample.test_images, sample.train_images])[:n]
    folder.mkdir(parents=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"{i:05d}.png")
        Image.fromarray(255 - image).save(paths[-1])
    return paths


def bench_predict(repeats: int, n: int, work: Path) -> None:
    run = work / "template"
    subprocess.run([*DIGITLAB, "train", "--model", "template", "--quiet", "--out", str(run)], check=True)
    model = str(run / "model.safetensors")
    paths = write_pictures(work / "pictures", n)
    one = work / "one"
    one.mkdir()
    shutil.copy(paths[0], one)
    whole, single, difference = paired_difference(
        [*DIGITLAB, "predict", model, str(work / "pictures"), "--csv"],
        [*DIGITLAB, "predict", model, str(one), "--csv"], 2 * repeats - 1)
    ours = (n - 1) / max(difference, 1e-9)
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            np.asarray(image.convert("L"))
    decode = n / (time.perf_counter() - started)
    print(f"predict: {n} pictures {whole:.2f} s, one picture {single:.2f} s (start-up): "
          f"{ours:,.0f} pictures/s after start-up; a Pillow decode loop alone {decode:,.0f}/s")
    report("batch predict of 28x28 PNGs, normalised, after start-up", digitlab=ours,
           reference=decode, unit="images/s", ratio=ours / decode,
           target=f">= {PREDICT_TARGET:,.0f}/s", met=ours >= PREDICT_TARGET,
           note=f"{n} pictures; start-up {single:.2f} s; reference: Pillow decode only")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two runs of each, 300 pictures")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each command (default 5)")
    parser.add_argument("--n", type=int, default=None, help="pictures to predict (default 1000)")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)
    n = args.n or (300 if args.quick else 1_000)
    with tempfile.TemporaryDirectory() as tmp:
        bench_help(repeats)
        bench_train(repeats, Path(tmp) / "train")
        bench_predict(repeats, n, Path(tmp) / "predict")


if __name__ == "__main__":
    main()
