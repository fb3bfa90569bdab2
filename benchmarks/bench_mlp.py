"""A 784-100-10 MLP on Fashion-MNIST 60k/10k: digitlab against scikit-learn.

In one run:

1. scikit-learn's ``MLPClassifier(hidden_layer_sizes=(100,), max_iter=20)``
   with its other defaults (ReLU, Adam at 0.001, batches of 200, alpha 1e-4;
   it stops at the 20-epoch limit with a ConvergenceWarning, which is what a
   user running it plainly gets) is timed to fit; its accuracy on the
   validation split is the target.

Both train on the same 90% of the training images; the other 10% (stratified,
seeded by ``--seed``) is the validation split everything is compared on while
training. The test split is read once, after training: nothing stops or is
chosen on it.
2. digitlab's ``MLP`` with the same 784-100-10 ReLU network trains epoch by
   epoch with the validation split as ``eval_set``; the first epoch whose
   validation accuracy reaches the target stops training (from the progress
   callback, the way Ctrl-C would). The time to that moment, which includes
   every epoch's validation evaluation, is the figure; the model's test
   accuracy is then read once and printed beside scikit-learn's.
3. The same digitlab settings once more without an eval set, all epochs:
   plain fit time and final test accuracy.

Both get the same float32 features in [0, 1] and the machine's BLAS threads
(digitlab itself runs mini-batch products this small on one thread). The
machine's load average is printed beside the figures: on a shared machine
both timings suffer, OpenBLAS's multi-threaded small products worst.
``--threads 1`` pins both to one BLAS thread for a per-core comparison.

    python benchmarks/bench_mlp.py               # the full 60k/10k run
    python benchmarks/bench_mlp.py --threads 1   # both on one BLAS thread
    python benchmarks/bench_mlp.py --dry-run     # 6,000 / 1,000 images, 3 epochs
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
import warnings
from typing import Any

from _results import report  # benchmarks/ is sys.path[0] when run as a script
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_info, threadpool_limits

from digitlab.data.sources import load
from digitlab.models.mlp import MLP
from digitlab.models.training import Progress

VALIDATION_FRACTION = 0.1  # of the training images, stratified, seeded by --seed
TARGET_RATIO = 0.5  # issue 17 (issue 3 asked 1.0): scikit-learn's accuracy in at most half its time

# The same network as scikit-learn's (784-100-10, ReLU, softmax, Adam), tuned
# for time to accuracy: it trains on standardised pixels (``standardize``,
# folded into the first layer afterwards, so it still takes the [0, 1]
# features scikit-learn gets), with a higher Adam rate and a cosine decay of it
# over 8 epochs. Chosen on the validation split (seeds 0-2; before the
# standardised pixels, the cosine over 20 epochs needed 16 of them):
# standardised, the cosine over 5, 6, 7 or 8 epochs reached scikit-learn's
# validation accuracy after 4-6 epochs, and over 8 it ends 0.4-0.5 points above.
SETTINGS: dict[str, Any] = {
    "hidden": (100,),
    "activation": "relu",
    "optimizer": "adam",
    "lr": 0.002,
    "batch_size": 200,
    "epochs": 8,
    "alpha": 1e-4,
    "standardize": True,
    "lr_schedule": "cosine",
    "tol": None,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="both models' seed (default: 0)")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS threads for both (default: the machine's)")
    parser.add_argument("--dry-run", action="store_true",
                        help="a quick check on 6,000 / 1,000 images and 3 epochs")
    args = parser.parse_args()

    data = load("fashion-mnist")
    epochs = int(SETTINGS["epochs"])
    max_iter = 20
    if args.dry_run:
        data = data.take("train", 0, 6000).take("test", 0, 1000)
        epochs = max_iter = 3
    # The validation split, carved from the training images, is what both sides are
    # compared on while training; the test split is read once, after training.
    data = data.with_validation(VALIDATION_FRACTION, args.seed)
    X, y = data.features("train"), data.train_labels
    X_val, y_val = data.features("validation"), data.labels("validation")
    X_test, y_test = data.features("test"), data.test_labels
    limits = threadpool_limits(args.threads, user_api="blas") if args.threads else contextlib.nullcontext()
    with limits:
        blas = [f"{i['internal_api']} {i['version']}, {i['num_threads']} threads"
                for i in threadpool_info() if i["user_api"] == "blas"]
        print(f"BLAS: {'; '.join(blas)}; {os.cpu_count()} CPUs; load average "
              f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
        print(f"Fashion-MNIST: {len(X):,} train / {len(X_test):,} test, {X.shape[1]} features, {X.dtype}")
        run(args.seed, X, y, X_val, y_val, X_test, y_test, epochs=epochs, max_iter=max_iter)
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


def run(seed: int, X, y, X_val, y_val, X_test, y_test, *, epochs: int, max_iter: int) -> None:
    # -- 1. scikit-learn, as a user would run it
    reference = MLPClassifier(hidden_layer_sizes=(100,), max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # stopping at max_iter is expected
        start = time.perf_counter()
        reference.fit(X, y)
        sk_seconds = time.perf_counter() - start
    sk_target = float(reference.score(X_val, y_val))  # the target: its validation accuracy
    sk_accuracy = float(reference.score(X_test, y_test))  # read once, after training
    print(f"scikit-learn MLPClassifier((100,), max_iter={max_iter}): {sk_seconds:.1f} s, "
          f"{reference.n_iter_} epochs, validation accuracy {sk_target:.4f}, test accuracy {sk_accuracy:.4f}")

    # -- 2. digitlab to the same validation accuracy
    settings = {**SETTINGS, "epochs": epochs}
    reached: dict[str, float] = {}
    start = time.perf_counter()

    def stop_at_target(progress: Progress) -> None:
        if progress.logs["val_accuracy"] >= sk_target:
            reached.update(seconds=time.perf_counter() - start, epoch=progress.step,
                           accuracy=progress.logs["val_accuracy"])
            raise KeyboardInterrupt  # stop here, as Ctrl-C would

    model = MLP(random_state=seed, **settings)
    model.fit(X, y, eval_set=(X_val, y_val), callback=stop_at_target)
    stopped_accuracy = float(model.score(X_test, y_test))  # the test split, read once
    curve = " ".join(f"{a:.4f}" for a in model.history_["val_accuracy"])
    print(f"digitlab MLP {settings}")
    print(f"  validation accuracy by epoch: {curve}")
    if reached:
        print(f"  reached {reached['accuracy']:.4f} >= {sk_target:.4f} after epoch "
              f"{int(reached['epoch'])} in {reached['seconds']:.2f} s; test accuracy then "
              f"{stopped_accuracy:.4f}")
    else:
        print(f"  did not reach {sk_target:.4f} in {epochs} epochs")

    # -- 3. the same settings, a plain fit of every epoch
    start = time.perf_counter()
    plain = MLP(random_state=seed, **settings).fit(X, y)
    plain_seconds = time.perf_counter() - start
    plain_accuracy = float(plain.score(X_test, y_test))
    print(f"  plain fit, {plain.n_iter_} epochs: {plain_seconds:.2f} s, test accuracy {plain_accuracy:.4f}")

    print()
    print(f"{'':34}{'digitlab':>12}{'scikit-learn':>14}")
    if reached:
        print(f"{'seconds to the target accuracy':34}{reached['seconds']:>12.2f}{sk_seconds:>14.1f}")
        print(f"{'validation accuracy then':34}{reached['accuracy']:>12.4f}{sk_target:>14.4f}")
        print(f"{'test accuracy then':34}{stopped_accuracy:>12.4f}{sk_accuracy:>14.4f}")
    print(f"{'seconds, full run':34}{plain_seconds:>12.2f}{sk_seconds:>14.1f}")
    print(f"{'test accuracy, full run':34}{plain_accuracy:>12.4f}{sk_accuracy:>14.4f}")
    if reached:
        ratio = reached["seconds"] / sk_seconds
        verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
        print(f"time ratio digitlab / scikit-learn: {ratio:.3f} (target <= {TARGET_RATIO}: {verdict})")
    else:
        print(f"time ratio: target accuracy not reached (target <= {TARGET_RATIO}: MISSED)")
    seconds = reached.get("seconds", float("nan"))  # NaN: never reached, so never met
    report(f"mlp 784-100-10 on {len(X):,} images: time to scikit-learn's accuracy",
           digitlab=seconds, reference=sk_seconds, unit="s", ratio=seconds / sk_seconds,
           target=f"time ratio <= {TARGET_RATIO}", met=seconds / sk_seconds <= TARGET_RATIO,
           note=f"to scikit-learn's validation accuracy {sk_target:.4f}; test accuracy then "
                f"{stopped_accuracy:.4f} (scikit-learn {sk_accuracy:.4f})")


if __name__ == "__main__":
    main()
