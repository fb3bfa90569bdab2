"""CPU time of normalising one 280x280 canvas drawing, as ``digitlab serve`` does per request.

In one run, in this process, with one BLAS thread (as each serve worker runs):

1. ``--n`` drawings as the draw-a-digit page sends them (``bench_serve.drawings``:
   the sample's test digits scaled to 280x280 PNGs, white ink on black),
   decoded as the server decodes an upload;
2. the reference: ``normalise_to`` through the general path (the paper surface,
   its statistics and the labelling over the whole picture), which every
   picture took before the canvas path;
3. digitlab: ``normalise_to`` as it runs now (a drawing on a black canvas is
   normalised from its ink's bounding box alone).

Both must give the same arrays, bit for bit. Each is timed with
``time.process_time`` (CPU seconds, so other processes on the machine count
less than in wall time), best of ``--repeats``. Target: under 1 ms of CPU a
drawing (issue 17).

    python benchmarks/bench_drawing.py            # 400 drawings, best of 3
    python benchmarks/bench_drawing.py --quick    # 100 drawings, best of 2
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from unittest import mock

import numpy as np
from _results import report  # benchmarks/ is sys.path[0] when run as a script
from bench_serve import drawings

from digitlab.data import preprocess
from digitlab.engines import limit_threads

TARGET_MS = 1.0  # CPU milliseconds per drawing


def cpu_ms(run: Callable[[], list[np.ndarray]], n: int, repeats: int) -> tuple[float, list[np.ndarray]]:
    """Best CPU milliseconds per picture of ``run`` over ``repeats``, and its last result."""
    times, result = [], []
    for _ in range(repeats):
        started = time.process_time()
        result = run()
        times.append(time.process_time() - started)
    return min(times) / n * 1000, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="drawings (default: 400)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs, best kept (default: 3)")
    parser.add_argument("--quick", action="store_true", help="100 drawings, best of 2")
    args = parser.parse_args()
    n, repeats = (100, 2) if args.quick else (args.n, args.repeats)
    limit_threads(1)  # as digitlab serve's workers: one BLAS thread

    payloads, _labels = drawings()
    pictures = [preprocess.decode_user_image(payloads[i % len(payloads)], source="upload")
                for i in range(n)]

    def normalise() -> list[np.ndarray]:
        return [preprocess.normalise_to(p, (28, 28), source="upload") for p in pictures]

    normalise()  # warm the caches (the fit's grid, the resampling weights) for both
    with mock.patch.object(preprocess, "_canvas_ink_map", return_value=None):
        general, expected = cpu_ms(normalise, n, repeats)
    canvas, got = cpu_ms(normalise, n, repeats)
    same = all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    print(f"{n} drawings of 280x280, CPU per drawing: general path {general:.2f} ms, "
          f"canvas path {canvas:.2f} ms ({general / canvas:.1f}x); identical: {same}")
    if not same:
        raise SystemExit("the canvas path changed the normalised pictures")
    report("normalise a 280x280 drawing (CPU per drawing)", digitlab=round(canvas, 3),
           reference=round(general, 3), unit="ms", ratio=round(general / canvas, 2),
           target=f"< {TARGET_MS:g} ms", met=canvas < TARGET_MS,
           note=f"{n} drawings, 1 BLAS thread; reference: the general path")


if __name__ == "__main__":
    main()
