"""The bundled reader's NumPy forward pass against the same network on PyTorch.

In one run, on the same float32 features and the same weights (the bundled
``mnist-cnn.safetensors``): digitlab's NumPy pass (``NumpyCNN.logits``, what a
base install without PyTorch runs) and the CNN's PyTorch forward pass
(``CNN.decision_function``, channels-last oneDNN), each timed alternately.

Rows (issue 19's targets, 2 cores):

- batch: digits per second over a batch (MNIST test images, or the bundled
  sample's 1,000 without ``--data``): at least 2,000;
- one digit: median milliseconds of one-image calls: under 5 ms;
- the largest difference of the two paths' probabilities (agreement, not speed).

    python benchmarks/bench_pretrained.py                       # the bundled sample's test images
    python benchmarks/bench_pretrained.py --data /work/data/mnist   # MNIST test (10,000) and its accuracy
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from _results import report  # benchmarks/ is sys.path[0] when run as a script

from digitlab.bundled import pretrained
from digitlab.data.sources import load
from digitlab.models.base import softmax
from digitlab.models.cnn_numpy import NumpyCNN

BATCH_TARGET = 2000.0  # digits per second
ONE_TARGET_MS = 5.0


def best_seconds(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up: caches, thread pools, oneDNN's kernels
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def median_ms(call: Callable[[], object], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist-sample",
                        help="dataset whose test split is timed (an MNIST IDX folder for the real figure)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = load(args.data)
    X, y = data.features("test"), data.test_labels
    model = pretrained()  # with torch installed: the PyTorch network
    net = NumpyCNN(model.state_dict(), 28)

    numpy_s, torch_s = [], []
    for _ in range(args.repeats):  # alternately, so both see the same load
        numpy_s.append(best_seconds(lambda: net.logits(X), 1))
        torch_s.append(best_seconds(lambda: model.decision_function(X), 1))
    numpy_rate, torch_rate = len(X) / min(numpy_s), len(X) / min(torch_s)
    one = X[:1]
    numpy_ms = median_ms(lambda: net.logits(one), 200)
    torch_ms = median_ms(lambda: model.decision_function(one), 200)

    logits = net.logits(X)
    numpy_acc = float(np.mean(logits.argmax(1) == y))
    gap = float(np.abs(softmax(logits.astype(np.float64)) - model.predict_proba(X)).max())
    print(f"{args.data} test, {len(X):,} digits: NumPy {numpy_rate:,.0f}/s, torch {torch_rate:,.0f}/s; "
          f"one digit NumPy {numpy_ms:.2f} ms, torch {torch_ms:.2f} ms; accuracy {numpy_acc:.4f}; "
          f"largest probability difference {gap:.1e}")
    report("pretrained NumPy batch", digitlab=numpy_rate, reference=torch_rate, unit="digits/s",
           ratio=numpy_rate / torch_rate, target=f">= {BATCH_TARGET:,.0f} digits/s",
           met=numpy_rate >= BATCH_TARGET, note=f"{len(X):,} {args.data} test digits; reference: torch")
    report("pretrained NumPy one digit", digitlab=numpy_ms, reference=torch_ms, unit="ms",
           ratio=numpy_ms / torch_ms, target=f"< {ONE_TARGET_MS:g} ms", met=numpy_ms < ONE_TARGET_MS,
           note="median of 200 calls; reference: torch")
    report("pretrained NumPy vs torch probabilities", digitlab=gap, reference=0.0, unit="max |dp|",
           ratio=gap, target="<= 1e-5", met=gap <= 1e-5,
           note=f"accuracy {numpy_acc:.4f} on {args.data} test")


if __name__ == "__main__":
    main()
