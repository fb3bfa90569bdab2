"""digitlab's CNN against the PyTorch examples' MNIST CNN: training speed, accuracy, inference.

In one run, on the same float32 features in [0, 1] and the same torch threads:

1. The reference: the CNN of pytorch/examples ``mnist/main.py``, written out
   plainly below (conv3x3 32 -> ReLU -> conv3x3 64 -> ReLU -> maxpool 2 ->
   dropout 0.25 -> dense 128 -> ReLU -> dropout 0.5 -> dense 10, log-softmax,
   Adadelta lr 1.0, StepLR gamma 0.7 per epoch, batches of 64, inputs
   normalised with MNIST's mean 0.1307 and deviation 0.3081). Its batches come
   from a shuffled index over one tensor, so data loading does not slow it
   down against digitlab.
2. digitlab's ``CNN`` with its default settings (timed just before and just
   after the reference, averaged), and a longer setting.

Rows (issue 6's targets):

- Fashion-MNIST 60k/10k: the reference for two epochs against digitlab's
  defaults (at least 91.5% in at most a quarter of the reference's time), and
  the longer setting (at least 93%).
- The bundled MNIST sample (4,000 / 1,000): the reference for its 14 default
  epochs against digitlab's defaults (at least 98.5% in under 15 s).
- Inference with the default model: one image (under 5 ms, median of many)
  and 10,000 images in one call (under a second), beside the reference net's
  times for the same calls.
- The full MNIST 60k/10k (issue 17), with ``--mnist DIR`` (the IDX folder
  that ``python ../shared/data/fetch_full_mnist.py DIR`` writes): digitlab's defaults
  (at least 99.4% in at most 20 s of training) and the documented longer
  setting (at least 99.6% in at most 10 minutes); with ``--mnist-reference``
  also the reference for its 14 epochs (about half an hour on 2 cores), timed
  in the same run.

    python benchmarks/bench_cnn.py             # everything (about 8 minutes on 2 cores)
    python benchmarks/bench_cnn.py --quick     # 6,000 / 1,000 Fashion images, no longer setting
    python benchmarks/bench_cnn.py --mnist /work/data/mnist --only-mnist --mnist-reference
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from _results import report  # benchmarks/ is sys.path[0] when run as a script
from torch import nn

from digitlab.data.sources import load
from digitlab.models.cnn import CNN

TARGET_RATIO = 0.25  # issue 6: digitlab in at most a quarter of the reference's time
TARGET_ACCURACY = 0.915  # ... reaching at least this on Fashion-MNIST
LONGER_TARGET = 0.93  # the longer setting on Fashion-MNIST
SAMPLE_TARGET, SAMPLE_SECONDS = 0.985, 15.0  # the bundled sample, default settings
MNIST_TARGET, MNIST_SECONDS = 0.994, 20.0  # issue 17: full MNIST, default settings
MNIST_LONGER_TARGET, MNIST_LONGER_SECONDS = 0.996, 600.0  # ... and the longer setting


class ReferenceNet(nn.Module):
    """pytorch/examples mnist/main.py's ``Net``, unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def reference(
    X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, *, epochs: int, seed: int
) -> tuple[float, float]:
    """Train the reference for ``epochs`` epochs; return (seconds, test accuracy)."""
    torch.manual_seed(seed)  # a benchmark script, so the global seed is fine here

    def images(a: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(a).reshape(-1, 1, 28, 28) - 0.1307) / 0.3081

    inputs, targets = images(X), torch.from_numpy(y)
    model = ReferenceNet()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(inputs))
        for first in range(0, len(inputs), 64):
            rows = order[first : first + 64]
            optimizer.zero_grad()
            loss = F.nll_loss(model(inputs[rows]), targets[rows])
            loss.backward()
            optimizer.step()
        scheduler.step()
    seconds = time.perf_counter() - start
    model.eval()
    test = images(X_test)
    with torch.inference_mode():
        predicted = torch.cat([model(test[i : i + 1000]).argmax(1) for i in range(0, len(test), 1000)])
    return seconds, float((predicted.numpy() == y_test).mean())


LONGER = {"epochs": 15, "width": 32, "dense": 256}  # the longer setting (augments: 15 epochs)
# The full MNIST's longer setting (augments: 12 epochs), chosen on the validation split
# (6,000 of the 60,000 training images, seed 0) over: width 32 / dense 64 / 8 epochs shifted
# only 99.33%; turned and scaled 99.43%; convs 2 99.45%; 15 epochs turned and scaled 99.37%;
# convs 2, turned and scaled, 12 epochs 99.53% (this one). The bundled reader keeps its own
# smaller setting (scripts/build_pretrained.py), which fits in 1 MB.
MNIST_LONGER = {"epochs": 12, "width": 32, "dense": 64, "convs": 2, "rotate": 10.0, "zoom": 0.1}


def timed_fit(model: CNN, X: np.ndarray, y: np.ndarray) -> float:
    start = time.perf_counter()
    model.fit(X, y)
    return time.perf_counter() - start


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def reference_predictor() -> Callable[[np.ndarray], np.ndarray]:
    """The reference net (weights untrained: only its speed is measured) as a predict function."""
    model = ReferenceNet().eval()

    def predict(features: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            images = (torch.from_numpy(features).reshape(-1, 1, 28, 28) - 0.1307) / 0.3081
            return torch.cat([model(images[i : i + 1000]) for i in range(0, len(images), 1000)]).numpy()

    return predict


def full_mnist(directory: str, *, seed: int, with_reference: bool) -> None:
    """The full MNIST rows: defaults and the longer setting, beside the reference's 14 epochs."""
    data = load(directory)
    X, y = data.features("train"), data.train_labels
    X_test, y_test = data.features("test"), data.test_labels
    print(f"Full MNIST ({directory}): {len(X):,} train / {len(X_test):,} test")
    ref_seconds, ref_accuracy = float("nan"), float("nan")
    model = CNN(random_state=seed)
    before = timed_fit(model, X, y)
    accuracy = model.score(X_test, y_test)
    after = before
    if with_reference:
        ref_seconds, ref_accuracy = reference(X, y, X_test, y_test, epochs=14, seed=seed)
        print(f"  reference CNN, 14 epochs:     {ref_seconds:7.1f} s  test {ref_accuracy:.2%}",
              flush=True)
        after = timed_fit(CNN(random_state=seed), X, y)
    seconds = (before + after) / 2
    print(f"  digitlab CNN, defaults:       {seconds:7.1f} s  test {accuracy:.2%} "
          f"({model.n_iter_} epochs; {before:.1f} s, {after:.1f} s)", flush=True)
    report("cnn full mnist, defaults (accuracy)", digitlab=accuracy, reference=ref_accuracy,
           unit="accuracy", ratio=accuracy / ref_accuracy,
           target=f"accuracy >= {MNIST_TARGET:.1%} in <= {MNIST_SECONDS:.0f} s",
           met=accuracy >= MNIST_TARGET and seconds <= MNIST_SECONDS,
           note=f"{seconds:.1f} s vs {ref_seconds:.1f} s of training (reference: 14 epochs)")
    longer = CNN(random_state=seed, **MNIST_LONGER)
    long_seconds = timed_fit(longer, X, y)
    long_accuracy = longer.score(X_test, y_test)
    print(f"  digitlab CNN, {MNIST_LONGER}: {long_seconds:7.1f} s  test {long_accuracy:.2%}",
          flush=True)
    report(f"cnn full mnist, longer setting {MNIST_LONGER} (accuracy)", digitlab=long_accuracy,
           reference=ref_accuracy, unit="accuracy", ratio=long_accuracy / ref_accuracy,
           target=f"accuracy >= {MNIST_LONGER_TARGET:.1%} in <= {MNIST_LONGER_SECONDS:.0f} s",
           met=long_accuracy >= MNIST_LONGER_TARGET and long_seconds <= MNIST_LONGER_SECONDS,
           note=f"{long_seconds:.0f} s of training")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="both models' seed (default: 0)")
    parser.add_argument("--quick", action="store_true",
                        help="6,000 / 1,000 Fashion images and no longer setting: a check that it runs")
    parser.add_argument("--no-longer", action="store_true",
                        help="leave out the Fashion longer setting (about 4.5 minutes)")
    parser.add_argument("--mnist", metavar="DIR",
                        help="also the full MNIST rows, from this IDX folder (60,000 / 10,000)")
    parser.add_argument("--mnist-reference", action="store_true",
                        help="with --mnist: also train the reference for its 14 epochs (long)")
    parser.add_argument("--only-mnist", action="store_true",
                        help="with --mnist: only the full MNIST rows")
    args = parser.parse_args()
    if (args.mnist_reference or args.only_mnist) and not args.mnist:
        parser.error("--mnist-reference and --only-mnist need --mnist DIR")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if args.mnist:
        full_mnist(args.mnist, seed=args.seed, with_reference=args.mnist_reference)
        if args.only_mnist:
            print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
            return

    # Fashion-MNIST: training time to accuracy.
    data = load("fashion-mnist")
    X, y = data.features("train"), data.train_labels
    X_test, y_test = data.features("test"), data.test_labels
    if args.quick:
        X, y, X_test, y_test = X[:6000], y[:6000], X_test[:1000], y_test[:1000]
    print(f"Fashion-MNIST: {len(X):,} train / {len(X_test):,} test")
    # digitlab is timed just before and just after the reference, and the two
    # are averaged, so a change in the machine's load during the run weighs on
    # both sides alike (same seed, so both fits give the same weights).
    model = CNN(random_state=args.seed)
    before = timed_fit(model, X, y)
    accuracy = model.score(X_test, y_test)
    ref_seconds, ref_accuracy = reference(X, y, X_test, y_test, epochs=2, seed=args.seed)
    print(f"  reference CNN, 2 epochs:      {ref_seconds:7.1f} s  test {ref_accuracy:.2%}", flush=True)
    after = timed_fit(CNN(random_state=args.seed), X, y)
    seconds = (before + after) / 2
    print(f"  digitlab CNN, defaults:       {seconds:7.1f} s  test {accuracy:.2%} "
          f"({model.n_iter_} epochs; {before:.1f} s before the reference, {after:.1f} s after)",
          flush=True)
    ratio = seconds / ref_seconds
    report("cnn fashion-mnist, defaults vs reference 2 epochs (seconds)", digitlab=seconds,
           reference=ref_seconds, unit="s", ratio=ratio,
           target=f"ratio <= {TARGET_RATIO} with accuracy >= {TARGET_ACCURACY:.1%}",
           met=ratio <= TARGET_RATIO and accuracy >= TARGET_ACCURACY,
           note=f"accuracy {accuracy:.2%} vs {ref_accuracy:.2%}")
    if not (args.quick or args.no_longer):
        longer = CNN(random_state=args.seed, **LONGER)
        long_seconds = timed_fit(longer, X, y)
        long_accuracy = longer.score(X_test, y_test)
        print(f"  digitlab CNN, {LONGER}: {long_seconds:7.1f} s  test {long_accuracy:.2%}", flush=True)
        report(f"cnn fashion-mnist, longer setting {LONGER} (accuracy)", digitlab=long_accuracy,
               reference=ref_accuracy, unit="accuracy", ratio=long_accuracy / ref_accuracy,
               target=f"accuracy >= {LONGER_TARGET:.0%}", met=long_accuracy >= LONGER_TARGET,
               note=f"{long_seconds:.0f} s of training")

    # The bundled MNIST sample: accuracy in seconds.
    sample = load("mnist-sample")
    Xs, ys = sample.features("train"), sample.train_labels
    Xs_test, ys_test = sample.features("test"), sample.test_labels
    print(f"MNIST sample: {len(Xs):,} train / {len(Xs_test):,} test")
    sref_seconds, sref_accuracy = reference(Xs, ys, Xs_test, ys_test, epochs=14, seed=args.seed)
    print(f"  reference CNN, 14 epochs:     {sref_seconds:7.1f} s  test {sref_accuracy:.2%}", flush=True)
    small = CNN(random_state=args.seed)
    s_seconds = timed_fit(small, Xs, ys)
    s_accuracy = small.score(Xs_test, ys_test)
    print(f"  digitlab CNN, defaults:       {s_seconds:7.1f} s  test {s_accuracy:.2%} "
          f"({small.n_iter_} epochs)", flush=True)
    report("cnn mnist-sample, defaults vs reference 14 epochs (accuracy)", digitlab=s_accuracy,
           reference=sref_accuracy, unit="accuracy", ratio=s_accuracy / sref_accuracy,
           target=f"accuracy >= {SAMPLE_TARGET:.1%} in < {SAMPLE_SECONDS:.0f} s",
           met=s_accuracy >= SAMPLE_TARGET and s_seconds < SAMPLE_SECONDS,
           note=f"{s_seconds:.1f} s vs {sref_seconds:.1f} s of training")

    # Inference with the trained default model, beside the reference net's times.
    print("Inference (median of repeated calls):")
    one = Xs_test[:1]
    batch = np.concatenate([Xs_test] * 10)  # 10,000 images
    ref_predict = reference_predictor()
    one_s = median_seconds(lambda: small.predict_proba(one), 200)
    ref_one_s = median_seconds(lambda: ref_predict(one), 200)
    batch_s = median_seconds(lambda: small.predict_proba(batch), 5)
    ref_batch_s = median_seconds(lambda: ref_predict(batch), 5)
    print(f"  one image:      digitlab {one_s * 1e3:6.2f} ms   reference {ref_one_s * 1e3:6.2f} ms")
    print(f"  10,000 images:  digitlab {batch_s:6.3f} s    reference {ref_batch_s:6.3f} s")
    report("cnn predict one image (ms)", digitlab=one_s * 1e3, reference=ref_one_s * 1e3, unit="ms",
           ratio=one_s / ref_one_s, target="< 5 ms", met=one_s < 0.005)
    report("cnn predict 10,000 images (s)", digitlab=batch_s, reference=ref_batch_s, unit="s",
           ratio=batch_s / ref_batch_s, target="< 1 s", met=batch_s < 1.0)
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
