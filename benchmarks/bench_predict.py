"""Batch predict of a folder of 28x28 PNGs, normalised: stacked against one picture at a time.

In one run, in this process (so start-up is not counted; ``bench_startup.py`` times the
whole command):

1. a template model trained on the bundled sample (the fit takes no time);
2. ``--n`` 28x28 PNGs of the sample's digits, dark ink on white paper, so every
   one is normalised (inverted, cropped, 20x20 box, centre of mass);
3. the reference: every picture read and normalised on its own, as
   ``digitlab predict`` did before it stacked small pictures
   (``predict_prepared`` over ``model_input`` of each file);
4. digitlab: ``predict_images`` on the folder, as ``digitlab predict`` runs it.

Both must see identical images and give identical answers. Each is timed as the
best of ``--repeats`` runs. Target: at least 5,000 pictures/s.

    python benchmarks/bench_predict.py            # 5,000 pictures, best of 3
    python benchmarks/bench_predict.py --quick    # 1,000 pictures, best of 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from _results import report  # benchmarks/ is sys.path[0] when run as a script
from PIL import Image

from digitlab.data.sources import load
from digitlab.io import load_model
from digitlab.predict import collect_images, model_input, predict_images, predict_prepared
from digitlab.run import RunConfig, train

TARGET = 5_000.0  # pictures per second, after start-up


def write_pictures(folder: Path, n: int) -> None:
    sample = load("mnist-sample")
    images = np.concatenate([sample.test_images, sample.train_images])
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(255 - images[i % len(images)]).save(folder / f"{i:05d}.png")


def best(run: Callable[[], list], repeats: int) -> tuple[float, list]:
    times, result = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5_000, help="pictures (default: 5000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, best kept (default: 3)")
    parser.add_argument("--quick", action="store_true", help="1,000 pictures, best of 2")
    args = parser.parse_args()
    n, repeats = (1_000, 2) if args.quick else (args.n, args.repeats)
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        train(RunConfig(model="template", seed=0), Path(tmp) / "run")
        model, info = load_model(Path(tmp) / "run" / "model.safetensors")
        folder = Path(tmp) / "pictures"
        write_pictures(folder, n)
        files = collect_images([folder])
        one_by_one, before = best(lambda: predict_prepared(
            model, info, [(str(p), partial(model_input, p, info)) for p in files]), repeats)
        stacked, after = best(lambda: predict_images(model, info, [folder]), repeats)
    same = all(np.array_equal(a.image, b.image) and a.label == b.label
               for a, b in zip(before, after, strict=True))
    ours, reference = n / stacked, n / one_by_one
    print(f"{n:,} 28x28 PNGs, normalised: one at a time {one_by_one:.2f} s ({reference:,.0f}/s), "
          f"stacked {stacked:.2f} s ({ours:,.0f}/s); identical images and answers: {same}")
    report("batch predict of 28x28 PNGs, normalised, in process", digitlab=ours,
           reference=reference, unit="images/s", ratio=ours / reference,
           target=f">= {TARGET:,.0f}/s", met=same and ours >= TARGET,
           note=f"{n:,} pictures, best of {repeats}; reference: one picture at a time")
    if not same:
        raise SystemExit("the stacked pictures differ from one-at-a-time ones")


if __name__ == "__main__":
    main()
