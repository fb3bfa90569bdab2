"""Each accuracy target of the classic models beside its reference, in one run.

    python benchmarks/bench_accuracy.py

Bundled MNIST sample (4,000 train / 1,000 test) and scikit-learn's 8x8 digits
(first 1,000 train, next 500 test, raw values / 15 as the classic exercise).
References are the majority-class baseline and scikit-learn's own models
(on raw pixels). "Is it a 2" with softmax and the perceptron is shown on raw
pixels, where linear models stop near 97.7%, and deskewed, the classic fix.
A target ">= X%" is met at X% or more, "about X%" within 1.5 points of X%
(the tolerance tests/test_mlp.py checks the 8x8 sigmoid row with).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from _results import report  # benchmarks/ is sys.path[0] when run as a script
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from digitlab import metrics
from digitlab.data.deskew import deskew_images
from digitlab.data.sources import digits_raw_values, load
from digitlab.lab import BEST_DIGITS_MLP
from digitlab.models import MLP, GuessAndCheck, Perceptron, Softmax

ABOUT = 0.015  # "about X%": within 1.5 points
NO_TARGET = "-"  # a row printed for comparison, with no target of its own


def meets(target: str, accuracy: float) -> bool:
    """The verdict on a target as the table states it: ``">= 98%"`` or ``"about 91%"``."""
    kind, percent = target.split()
    value = float(percent.removesuffix("%")) / 100
    if kind == ">=":
        return accuracy >= value
    if kind == "about":
        return abs(accuracy - value) <= ABOUT + 1e-9  # 92.5% is within 1.5 points of 91%
    raise ValueError(f"unknown target {target!r}: expected '>= X%' or 'about X%'")


def arrays(data):
    return data.features("train"), data.train_labels, data.features("test"), data.test_labels


def main() -> None:
    rows = []

    def row(task, model, fitted, X_test, y_test, reference, reference_value, target, seconds):
        accuracy = fitted.score(X_test, y_test)
        rows.append((task, model, accuracy, reference, reference_value, target, seconds))

    sample = load("mnist-sample")
    is2 = sample.for_task("is-2")
    X, y, Xt, yt = arrays(is2)
    baseline = metrics.majority_baseline(y, yt)
    lr_ref = LogisticRegression(max_iter=2000).fit(X, y).score(Xt, yt)
    for name, model, reference, value, target in (
        ("guess-and-check 5,000", GuessAndCheck(random_state=2024), "majority baseline", baseline, "about 91%"),
        ("softmax, raw pixels", Softmax(random_state=0), "sklearn LogisticRegression", lr_ref, NO_TARGET),
        ("perceptron, raw pixels", Perceptron(random_state=0), "sklearn LogisticRegression", lr_ref, NO_TARGET),
    ):
        started = time.perf_counter()
        model.fit(X, y)
        row("sample is-2", name, model, Xt, yt, reference, value, target, time.perf_counter() - started)
    # On raw pixels a linear "is it a 2" tops out near 97.7% (scikit-learn's too);
    # deskewing (`digitlab train --deskew`) is the classic fix, timed with the fit.
    for name, model in (("softmax --deskew", Softmax(random_state=0)), ("perceptron --deskew", Perceptron(random_state=0))):
        started = time.perf_counter()
        upright = is2.map_images(deskew_images, "deskewed")
        model.fit(upright.features("train"), upright.train_labels)
        seconds = time.perf_counter() - started
        row("sample is-2", name, model, upright.features("test"), upright.test_labels,
            "sklearn LogisticRegression", lr_ref, ">= 98%", seconds)

    X, y, Xt, yt = arrays(sample)
    lr_ten = LogisticRegression(max_iter=2000).fit(X, y).score(Xt, yt)
    for name, model, target in (("softmax", Softmax(random_state=0), ">= 89%"), ("mlp", MLP(random_state=0), ">= 94%")):
        started = time.perf_counter()
        model.fit(X, y)
        row("sample ten digits", name, model, Xt, yt, "sklearn LogisticRegression", lr_ten, target,
            time.perf_counter() - started)

    digits = load("digits").take("test", 0, 500)
    X = (digits_raw_values(digits.train_images).reshape(1000, -1) / 15.0).astype(np.float32)
    Xt = (digits_raw_values(digits.test_images).reshape(500, -1) / 15.0).astype(np.float32)
    y, yt = digits.train_labels, digits.test_labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = MLPClassifier(16, activation="logistic", learning_rate_init=0.1, max_iter=100,
                           random_state=1).fit(X, y)
    sk_accuracy = sk.score(Xt, yt)
    classic = MLP(hidden=(16,), activation="sigmoid", output="softmax", optimizer="adam", lr=0.1,
                  batch_size=200, epochs=100, alpha=1e-4 / 200, random_state=1)
    for name, model, target in (("64-16-10 sigmoid, sklearn's settings", classic, "about 96%"),
                                ("digitlab best settings", MLP(random_state=0, **BEST_DIGITS_MLP), ">= 97.5%")):
        started = time.perf_counter()
        model.fit(X, y)
        row("8x8 digits 1000/500", name, model, Xt, yt, "sklearn MLPClassifier(16)", sk_accuracy,
            target, time.perf_counter() - started)

    print(f"{'task':<22}{'model':<40}{'accuracy':>9}  {'reference':<28}{'ref.':>7}  {'target':<10}{'s':>6}")
    for task, model, accuracy, reference, value, target, seconds in rows:
        print(f"{task:<22}{model:<40}{accuracy:>9.2%}  {reference:<28}{value:>7.2%}  {target:<10}"
              f"{seconds:>6.1f}")
    for task, model, accuracy, reference, value, target, seconds in rows:
        if target == NO_TARGET:
            continue  # shown above for comparison only
        report(f"{task}: {model}", digitlab=float(accuracy), reference=float(value),
               unit="accuracy", ratio=accuracy / value, target=target,
               met=meets(target, accuracy), note=f"reference: {reference}; {seconds:.1f} s")


if __name__ == "__main__":
    main()
