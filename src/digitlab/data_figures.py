"""The figures of a run that show its data alone: made before any model exists.

They need neither the model nor scikit-learn, so ``digitlab train`` sends them to
its drawing process (:mod:`digitlab.drawing`) as soon as the data is loaded, to be
drawn while the run imports scikit-learn and trains; the rest of the run's figures
(:func:`digitlab.inspection.inspect_model`) follow once it has predictions.
"""

from __future__ import annotations

import numpy as np

from digitlab.analysis import average_images
from digitlab.data.dataset import Dataset
from digitlab.drawing import Recipe


def data_figures(dataset: Dataset, split: str = "test") -> dict[str, tuple[str, Recipe]]:
    """The data's own figures, by name: (caption, recipe). ``split`` is the one the
    run's analysis shows (its last); the averages are of the train split."""
    classes = np.unique(dataset.train_labels)
    means = average_images(dataset.train_images, dataset.train_labels, classes)
    images, y = dataset.images(split), dataset.labels(split)
    return {
        "average_digits": ("The average training image of each class",
                           Recipe("average_digits", (means, [dataset.class_name(int(c)) for c in classes]))),
        "digit_values": ("One digit with its pixel values, as the model reads them",
                         Recipe("digit_with_values", (images[0],),
                                dict(title=f"{split} digit 0: {dataset.class_name(int(y[0]))}"))),
    }
