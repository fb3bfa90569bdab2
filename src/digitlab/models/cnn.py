"""A compact convolutional network on PyTorch, built to train fast on a laptop CPU.

The network, for square images of side ``s``, ``w = width`` channels and
``d = dense`` hidden units::

    x (n, 1, s, s)
      -> conv3x3(w)  -> maxpool2 -> BN -> ReLU   (n, w,  s/2, s/2)
      -> conv3x3(2w) -> maxpool2 -> BN -> ReLU   (n, 2w, s/4, s/4)
      -> flatten -> linear(d) -> ReLU -> linear  (n, n_classes)

A pooling step is left out when it would shrink the map below 2x2, so 8x8
digits keep a 2x2 map (28 -> 14 -> 7, 20 -> 10 -> 5, 8 -> 4 -> 2).

Why it is fast on a CPU, with the measurements behind each choice:
``docs/design-notes.md``, "CNN".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from sklearn.utils.validation import check_is_fitted

from digitlab.engines import openmp_wait_policy_for_load
from digitlab.errors import DataWarning, SettingsError
from digitlab.lazy_import import lazy_import
from digitlab.models.base import ArraySpec, DigitClassifier, class_weights, softmax
from digitlab.models.settings import ClassWeight, Flag, Integer, Number, OneOf, Seed, SettingsSpec
from digitlab.models.summary import ModelSummary
from digitlab.models.training import Callback, Progress, run_epochs

if TYPE_CHECKING:
    import torch
    from torch import nn
else:
    # torch loads on first use (training, predicting, loading a CNN file), not on
    # import: the command line imports this module to list the CNN's settings.
    try:
        torch = lazy_import("torch", before=openmp_wait_policy_for_load)
    except ImportError:  # the base install: CNN files still load and predict, in NumPy
        torch = None

DEVICES = ("cpu", "auto", "cuda")
# Precision of training's forward and backward passes (weights and the optimizer stay float32);
# "auto": the short run below where it applies, else float32.
PRECISIONS = ("auto", "float32", "bfloat16")
# Rows per forward pass in predict: bounds memory, and batches this small keep the
# activations in cache (10,000 digits: 0.5 s in batches of 512, 1.1 s in one of 4096).
PREDICT_BATCH = 512
# With epochs=None, train on about this many images in all (4,000 images: 16 epochs),
# and never fewer than MIN_EPOCHS passes (60,000 images: 3 epochs).
AUTO_IMAGES_SEEN = 64_000
MIN_EPOCHS, MAX_EPOCHS = 3, 30
# With augment=None, augment when training runs at least this many epochs.
AUGMENT_FROM_EPOCHS = 8
# The short run: with epochs=None on a set large enough for MIN_EPOCHS, precision="auto"
# and a CPU with native bfloat16, train SHORT_RUN_EPOCHS epochs in bfloat16 (about the
# time of float32's MIN_EPOCHS), the images shifted (augment=None) in all but the last
# SHORT_RUN_CLEAN_EPOCHS. Validation (6,000 of MNIST's 60,000, seeds 0-3, 2 AMD EPYC
# cores): 99.26% against 99.17% for 3 float32 epochs, in 1.07x the time; Fashion-MNIST
# 92.02% against 91.98%. Shifting all 4 epochs: MNIST 99.24%, Fashion 91.63%; the 4
# epochs unshifted: MNIST 99.20%; 3 float32 epochs, the last unshifted: Fashion 91.55%.
SHORT_RUN_EPOCHS = 4
SHORT_RUN_CLEAN_EPOCHS = 1
# Shifts used by test-time augmentation: the image itself and one pixel each way.
TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (a CPU with AVX512-BF16 or AMX), where
    bfloat16 training is faster than float32 (elsewhere it may be slower). CUDA: False (not measured)."""
    if device.type != "cpu":
        return False
    cpu = torch.cpu
    # Private probes (torch 2.1+); a torch without them counts as not native.
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if check is not None)


def has_torch() -> bool:
    """Whether PyTorch can be used; without it a CNN file predicts with
    :class:`~digitlab.models.cnn_numpy.NumpyCNN` and cannot be trained."""
    return torch is not None


class _TargetReached(KeyboardInterrupt):
    """Raised from the progress callback to end training once target_accuracy is met.

    ``run_epochs`` stops cleanly (keeping the best weights) on KeyboardInterrupt;
    this subclass tells ``fit`` that the stop was a success, not a Ctrl-C.
    """


def image_side(n_features: int) -> int:
    """Side of the smallest square image that holds ``n_features`` pixels (784 -> 28, 3 -> 2).

    Features that are not a square image are laid out row by row in it, zeros
    after (:func:`pixels_to_images`): a scikit-learn classifier takes any number
    of features, and its estimator checks fit on 1, 2, 3, 5 or 10.
    """
    if n_features < 1:
        raise ValueError(f"X has {n_features} features, expected at least 1")
    return math.isqrt(n_features - 1) + 1


def pixels_to_images(pixels: torch.Tensor, side: int) -> torch.Tensor:
    """Features (n, n_features) as images (n, 1, side, side), row by row; zeros after the
    last feature when there are fewer than side*side (none for square images)."""
    missing = side * side - pixels.shape[1]
    if missing:
        pixels = torch.nn.functional.pad(pixels, (0, missing))  # (n, side*side)
    return pixels.reshape(-1, 1, side, side)


def build_network(side: int, n_classes: int, width: int, dense: int,
                  convs: int = 1) -> nn.Sequential:
    """The network for square images of ``side`` pixels (see the module docstring), with
    ``convs`` convolutions in each of its two blocks (only the last of a block pools)."""
    layers: list[nn.Module] = []
    channels_in, size = 1, side
    for channels in (width, 2 * width):
        for _ in range(convs - 1):  # extra convolutions at the block's full size
            layers += [torch.nn.Conv2d(channels_in, channels, 3, padding=1, bias=False),
                       torch.nn.BatchNorm2d(channels), torch.nn.ReLU(inplace=True)]
            channels_in = channels
        # Pool straight after the convolution, before BN and ReLU (as the fast
        # CIFAR-10 runs do): the normalisation then touches a quarter of the values.
        layers.append(torch.nn.Conv2d(channels_in, channels, 3, padding=1, bias=False))  # BN has the bias
        if size // 2 >= 2:
            layers.append(torch.nn.MaxPool2d(2))
            size //= 2
        layers += [torch.nn.BatchNorm2d(channels), torch.nn.ReLU(inplace=True)]
        channels_in = channels
    layers += [
        torch.nn.Flatten(),
        torch.nn.Linear(channels_in * size * size, dense),
        torch.nn.ReLU(inplace=True),
        torch.nn.Linear(dense, n_classes),
    ]
    return torch.nn.Sequential(*layers)


def auto_epochs(n_samples: int) -> int:
    """Epochs for ``epochs=None``: about AUTO_IMAGES_SEEN images, within [MIN_EPOCHS, MAX_EPOCHS]."""
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, round(AUTO_IMAGES_SEEN / n_samples))))


def shift_images(
    images: torch.Tensor, max_shift: int, generator: torch.Generator
) -> torch.Tensor:
    """Each image moved by its own random (dy, dx) in [-max_shift, max_shift], zeros fill in.

    images : (n, 1, s, s). Pads once, then one sliced copy per offset: (2m+1)^2
    tensor operations for the whole set instead of n small ones.
    """
    n, _, s, _ = images.shape
    m = max_shift
    padded = torch.nn.functional.pad(images, (m, m, m, m))  # (n, 1, s + 2m, s + 2m)
    offsets = torch.randint(0, (2 * m + 1) ** 2, (n,), generator=generator)
    out = torch.empty_like(images)
    for k in range(int((2 * m + 1) ** 2)):
        rows = (offsets == k).nonzero().squeeze(1)
        if len(rows):
            dy, dx = divmod(k, 2 * m + 1)
            out[rows] = padded[rows, :, dy : dy + s, dx : dx + s]
    return out


def warp_images(
    images: torch.Tensor, max_shift: int, rotate: float, zoom: float, generator: torch.Generator
) -> torch.Tensor:
    """Each image turned by up to ``rotate`` degrees, scaled by a factor in
    [1 - zoom, 1 + zoom] and moved by up to ``max_shift`` pixels each way, all drawn
    at random per image; bilinear resampling, zeros fill in.

    images : (n, 1, s, s). One affine grid and one ``grid_sample`` for the whole set.
    """
    n, _, s, _ = images.shape
    draws = torch.rand(n, 4, generator=generator) * 2 - 1  # uniform in [-1, 1)
    angle = draws[:, 0] * math.radians(rotate)
    scale = 1 + draws[:, 1] * zoom
    # The grid maps each output pixel to where it reads in the input, in coordinates
    # from -1 to 1 across the image (2 / s per pixel): turning by -angle and dividing by
    # the scale there turns the digit by +angle and scales it by `scale`.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    shift = draws[:, 2:] * (2 * max_shift / s)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # (n, 2, 3)
    grid = torch.nn.functional.affine_grid(theta, [n, 1, s, s], align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                                           align_corners=False)


def _shift_fixed(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """All images moved by the same (dy, dx) pixels, zeros fill in."""
    s = images.shape[-1]
    m = max(abs(dy), abs(dx))
    if m == 0:
        return images
    padded = torch.nn.functional.pad(images, (m, m, m, m))
    return padded[:, :, m - dy : m - dy + s, m - dx : m - dx + s]


class CNN(DigitClassifier):
    """Convolutional network with batch norm, trained with a one-cycle schedule (PyTorch).

    Parameters
    ----------
    epochs : int or None
        Passes over the training data; the one-cycle schedule spans them all.
        None: enough passes to train on about 64,000 images, at least 3 and at
        most 30 (16 for 4,000 images, 3 for 60,000).
    batch_size : int
        Samples per gradient step.
    lr : float
        Peak learning rate of the one-cycle schedule (Nesterov SGD, momentum
        cycling 0.95 -> 0.85 -> 0.95 as in ``OneCycleLR``).
    weight_decay : float
        L2 weight decay of the optimizer.
    label_smoothing : float
        Share of each target spread evenly over the classes, in [0, 1).
    augment : bool or None
        Shift each training image by a random offset of up to 2 pixels (1 for
        images smaller than 28 pixels) every epoch. None: augment when training
        runs 8 epochs or more, where the net would otherwise start to memorise
        its images (on Fashion-MNIST's 3 epochs it cost 0.8 point), and the
        features are a square image (not padded to one); in the short run
        (``precision``), in all epochs but the last.
    rotate : float
        When augmenting, also turn each image by a random angle of up to this
        many degrees either way, in [0, 180]. 0: no turning.
    zoom : float
        When augmenting, also scale each image by a random factor in
        [1 - zoom, 1 + zoom], in [0, 1). With ``rotate`` or ``zoom`` above 0 the
        shifts are drawn continuously and the image resampled bilinearly.
    width : int
        Channels of the first convolution (the second has twice as many).
    dense : int
        Units of the hidden dense layer.
    convs : int
        Convolutions in each of the two blocks (the extra ones at the block's
        full size, each with batch norm and ReLU). 2 is deeper and slower:
        about three times the computation at width 32.
    tta : bool
        Test-time augmentation: predict the mean probabilities of the image and
        four copies shifted by one pixel. Slower prediction, often a little better.
    target_accuracy : float or None
        Stop once the accuracy on ``eval_set`` (the training batches' accuracy
        when there is none) reaches this, in (0, 1].
    device : {"cpu", "auto", "cuda"}
        ``"auto"`` uses CUDA when available. Model files always hold CPU arrays.
    precision : {"auto", "float32", "bfloat16"}
        Training's forward and backward passes in float32 or under bfloat16
        autocast (convolutions and dense layers in bfloat16; weights, batch norm
        statistics, the loss and the optimizer stay float32). bfloat16 pays on
        CPUs with native bfloat16 (AVX512-BF16, AMX): a training step took 0.6-0.7
        of the float32 time on 2 AMD EPYC cores; elsewhere it may be slower.
        Prediction is always float32. ``"auto"``: float32, except for the short
        run: with ``epochs=None`` on a set where that means the minimum of 3
        epochs (about 20,000 images or more) on a CPU with native bfloat16,
        train 4 epochs in bfloat16 instead, in about the same time, with the
        images shifted (``augment=None``) in all but the last (full MNIST's
        validation split: 99.26% against 99.17% for seeds 0-3).
    class_weight : None, "balanced" or dict of label to float
        Weighs each sample's loss by its class's weight (PyTorch's
        ``cross_entropy(weight=...)``, which divides a batch's loss by the sum
        of its weights): ``"balanced"`` weighs class ``c`` by ``n_samples /
        (n_classes * count_c)``, as scikit-learn's ``class_weight``; a dict
        gives weights by label (1 for labels it leaves out). ``val_loss`` is
        not weighted.
    random_state : int, Generator or None
        Seeds initialisation, shuffling and augmentation; an int gives the same
        weights at every fit on the CPU.

    Attributes
    ----------
    network_ : torch.nn.Sequential
        The trained network (in eval mode, on the CPU after ``fit``).
    history_ : dict of str to list of float
        Per epoch: ``loss``, ``accuracy`` (running means over the epoch's
        batches), ``val_loss``, ``val_accuracy`` with ``eval_set``.
    n_iter_ : int
        Epochs run.
    kept_epoch_ : int
        The epoch whose weights the model holds (the best monitored one when
        it ends with the best weights, else the last).
    interrupted_ : bool
        Training was stopped by Ctrl-C (KeyboardInterrupt); the model is usable,
        holding the weights of the best epoch so far.
    stopped_early_ : bool
        Training stopped because ``target_accuracy`` was reached.

    Notes
    -----
    Measured on 2 AMD EPYC cores with native bfloat16 and the defaults (width 16,
    dense 128: 206,922 parameters at 28x28; batches of 128, peak lr 0.2;
    ``benchmarks/bench_cnn.py``, 2026-12-01): on the bundled 4,000 / 1,000 MNIST
    sample, 16 epochs with augmentation, 98.8% test accuracy in 3.8 s of training;
    on Fashion-MNIST 60,000 / 10,000, the short run, 92.01% in 11.7 s; on the full
    MNIST, the short run, 99.43% in 11.0 s (3 float32 epochs: 99.38% in 12.6-18.5 s).
    """

    kind: ClassVar[str] = "cnn"
    min_classes: ClassVar[int] = 2
    settings_spec: ClassVar[SettingsSpec] = {
        "epochs": Integer(1, none=True),
        "batch_size": Integer(1),
        "lr": Number(0.0, closed="neither"),
        "weight_decay": Number(0.0),
        "label_smoothing": Number(0.0, 1.0, closed="left"),
        "augment": Flag(none=True),
        "rotate": Number(0.0, 180.0),
        "zoom": Number(0.0, 1.0, closed="left"),
        "width": Integer(1),
        "dense": Integer(1),
        "convs": Integer(1),
        "tta": Flag(),
        "target_accuracy": Number(0.0, 1.0, closed="right", none=True),
        "device": OneOf(DEVICES),
        "precision": OneOf(PRECISIONS),
        "class_weight": ClassWeight(),
        "random_state": Seed(),
    }

    def __init__(
        self,
        *,
        epochs: int | None = None,
        batch_size: int = 128,
        lr: float = 0.2,
        weight_decay: float = 5e-4,
        label_smoothing: float = 0.1,
        augment: bool | None = None,
        rotate: float = 0.0,
        zoom: float = 0.0,
        width: int = 16,
        dense: int = 128,
        convs: int = 1,
        tta: bool = False,
        target_accuracy: float | None = None,
        device: str = "cpu",
        precision: str = "auto",
        class_weight: str | dict[int, float] | None = None,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.augment = augment
        self.rotate = rotate
        self.zoom = zoom
        self.width = width
        self.dense = dense
        self.convs = convs
        self.tta = tta
        self.target_accuracy = target_accuracy
        self.device = device
        self.precision = precision
        self.class_weight = class_weight
        self.random_state = random_state

    # ------------------------------------------------------------ fit

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        callback: Callback | None = None,
        eval_set: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> CNN:
        """Train on features ``X`` (n_samples, side*side) in [0, 1] and labels ``y`` (n_samples,).

        Parameters
        ----------
        callback : callable(Progress), optional
            Called after every epoch with the figures so far. Raising
            ``KeyboardInterrupt`` in it stops training cleanly, as Ctrl-C does.
        eval_set : (X_val, y_val), optional
            Validation data (``digitlab train`` passes its validation split,
            never the test split) to report ``val_loss`` and ``val_accuracy``
            on after each epoch; training ends with the weights of its best
            epoch, and ``target_accuracy`` watches it.
        """
        # The base class checks the settings, then X and y (scikit-learn's own checks
        # and messages), before anything changes.
        if not has_torch():
            raise SettingsError("training a CNN needs PyTorch: pip install 'digitlab[torch]'")
        self._checked_fit(X, y, callback=callback, eval_set=eval_set)
        return self

    def _fit(
        self,
        X: np.ndarray,
        y_index: np.ndarray,
        *,
        callback: Callback | None = None,
        eval_set: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        classes = self.classes_
        side = image_side(X.shape[1])
        padded = side * side != X.shape[1]
        if padded:
            warnings.warn(f"X has {X.shape[1]} features, not a square image: laid out in a "
                          f"{side}x{side} image padded with zeros", DataWarning, stacklevel=4)
        device = self._torch_device()
        val: tuple[torch.Tensor, torch.Tensor] | None = None
        if eval_set is not None:
            X_val, val_index = eval_set  # checked, labels as positions in classes_
            val = (_to_images(X_val, side, device), torch.from_numpy(val_index).to(device))

        seed = int(np.random.default_rng(self.random_state).integers(2**63 - 1))
        generator = torch.Generator().manual_seed(seed)
        # Initialise from our own seed without touching torch's global generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = build_network(side, len(classes), int(self.width), int(self.dense),
                                    int(self.convs))
        network = _channels_last(network.to(device))
        self.network_ = network

        images = _to_images(X, side, torch.device("cpu"))
        targets = torch.from_numpy(y_index.astype(np.int64))
        n, batch_size = len(X), int(self.batch_size)
        epochs = auto_epochs(n) if self.epochs is None else int(self.epochs)
        short_run = (self.precision == "auto" and self.epochs is None and epochs == MIN_EPOCHS
                     and native_bfloat16(device))
        if short_run:
            epochs = SHORT_RUN_EPOCHS
        # Shifting features that are not an image (padded ones) only moves them into
        # each other's places: on scikit-learn's 2-feature blobs, 30 epochs reach 79%
        # training accuracy with it and 95% without.
        augment = (epochs >= AUGMENT_FROM_EPOCHS and not padded if self.augment is None
                   else bool(self.augment))
        # Epochs from this one on train on the images as they are.
        clean_from = epochs + 1
        if short_run and self.augment is None and not padded:
            augment, clean_from = True, epochs - SHORT_RUN_CLEAN_EPOCHS + 1
        starts = list(range(0, n, batch_size))
        if side == 1 and n % batch_size == 1 and len(starts) > 1:
            # Batch norm cannot normalise a batch of one 1x1 map (one value per channel):
            # a lone last image joins the batch before. Images of 2x2 or more never need it.
            starts.pop()
        bounds = list(zip(starts, [*starts[1:], n], strict=True))
        steps_per_epoch = len(bounds)
        optimizer = torch.optim.SGD(
            network.parameters(), lr=float(self.lr), momentum=0.9, nesterov=True,
            weight_decay=float(self.weight_decay),
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=float(self.lr), epochs=epochs, steps_per_epoch=steps_per_epoch,
        )
        max_shift = 2 if side >= 28 else 1
        rotate, zoom = float(self.rotate), float(self.zoom)
        warp = rotate > 0 or zoom > 0
        smoothing = float(self.label_smoothing)
        weights = class_weights(self.class_weight, classes, y_index)  # None: unweighted
        weight = None if weights is None else torch.as_tensor(weights, dtype=torch.float32,
                                                              device=device)
        epoch_logs: dict[str, float] = {}
        low_precision = self.precision == "bfloat16" or short_run

        def train_epoch(epoch: int) -> None:
            network.train()
            if not augment or epoch >= clean_from:
                inputs = images
            elif warp:
                inputs = warp_images(images, max_shift, rotate, zoom, generator)
            else:
                inputs = shift_images(images, max_shift, generator)
            inputs = inputs.to(device).contiguous(memory_format=torch.channels_last)
            labels = targets.to(device)
            order = torch.randperm(n, generator=generator).to(device)
            total_loss = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            for start, stop in bounds:
                rows = order[start:stop]
                # Autocast picks bfloat16 for the convolutions and matrix products only,
                # float32 for the rest (batch norm's statistics, the softmax and the loss).
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=low_precision):
                    logits = network(inputs[rows])
                    loss = torch.nn.functional.cross_entropy(logits, labels[rows], weight=weight,
                                                             label_smoothing=smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                # Summed on the device: no synchronising .item() per batch.
                total_loss += loss.detach() * len(rows)
                correct += (logits.detach().argmax(1) == labels[rows]).sum()
            epoch_logs["loss"] = float(total_loss) / n
            epoch_logs["accuracy"] = int(correct) / n

        def evaluate() -> dict[str, float]:
            logs = dict(epoch_logs)
            if val is not None:
                logits = self._forward(val[0])
                logs["val_loss"] = float(torch.nn.functional.cross_entropy(logits, val[1]))
                logs["val_accuracy"] = float((logits.argmax(1) == val[1]).float().mean())
            return logs

        def snapshot() -> dict[str, np.ndarray]:
            return {k: v.detach().cpu().numpy().copy() for k, v in network.state_dict().items()}

        def restore(saved: dict[str, np.ndarray]) -> None:
            network.load_state_dict({k: torch.from_numpy(v) for k, v in saved.items()})

        watched = "val_accuracy" if val is not None else "accuracy"
        reached = False

        def on_epoch(progress: Progress) -> None:
            nonlocal reached
            if callback is not None:
                callback(progress)
            target = self.target_accuracy
            if target is not None and progress.logs[watched] >= float(target):
                reached = True
                raise _TargetReached

        result = run_epochs(
            epochs=epochs,
            train_epoch=train_epoch,
            evaluate=evaluate,
            # The kept epoch: the lowest validation loss. Not the highest validation
            # accuracy, which moves in steps of 1/n and on a few hundred images ties
            # or peaks by chance mid-schedule (seeds 0-2 on the sample: epochs 10-14
            # of 18 kept, 98.5% test, against 98.8% with the loss).
            monitor="val_loss" if val is not None else "loss",
            mode="min",
            tol=0.0,
            early_stopping=False,
            snapshot=snapshot,
            restore=restore,
            callback=on_epoch,
        )
        self.network_ = network.cpu().eval()
        self.history_ = result.history
        self.n_iter_ = result.epochs_run
        self.kept_epoch_ = result.kept_epoch
        self.interrupted_ = result.interrupted and not reached
        self.stopped_early_ = reached
        # What "auto" chose here (it depends on the CPU): shown by summary() and the report.
        self.training_precision_ = "bfloat16" if low_precision else "float32"

    def _torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise SettingsError("device='cuda' but PyTorch sees no CUDA device")
        return torch.device(self.device)

    # ------------------------------------------------------------ predict

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (n, n_classes) of images (n, 1, s, s) in eval mode, in batches."""
        network = self.network_
        network.eval()
        with torch.inference_mode():
            parts = [
                network(images[start : start + PREDICT_BATCH].contiguous(
                    memory_format=torch.channels_last))
                for start in range(0, len(images), PREDICT_BATCH)
            ]
        return torch.cat(parts)

    def _scores(self, X: np.ndarray) -> np.ndarray:
        if getattr(self, "numpy_net_", None) is not None:  # loaded without torch
            return self._numpy_scores(X)
        images = _to_images(X, image_side(X.shape[1]), next(self.network_.parameters()).device)
        if not self.tta:
            return self._forward(images).double().cpu().numpy()
        # Mean of the shifted copies' probabilities; its log is a score whose
        # softmax gives back exactly that mean.
        proba = torch.stack([
            torch.softmax(self._forward(_shift_fixed(images, dy, dx)).double(), dim=1)
            for dy, dx in TTA_SHIFTS
        ]).mean(0)
        return torch.log(proba.clamp_min(1e-300)).cpu().numpy()

    def _numpy_scores(self, X: np.ndarray) -> np.ndarray:
        """What :meth:`_scores` gives, from the NumPy forward pass (same TTA copies)."""
        net = self.numpy_net_
        if not self.tta:
            return net.logits(X).astype(np.float64)
        side = net.side
        images = np.pad(X, ((0, 0), (0, side * side - X.shape[1]))).reshape(-1, side, side)
        proba = np.mean([softmax(net.logits(shift_fixed_numpy(images, dy, dx).reshape(len(X), -1))
                                 .astype(np.float64)) for dy, dx in TTA_SHIFTS], axis=0)
        return np.log(np.maximum(proba, 1e-300))

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, np.ndarray]:
        """``net.<layer>.<name>`` arrays (weights and BN running statistics), ``classes_``,
        ``n_features_in_`` (copies)."""
        check_is_fitted(self, "classes_")
        state = (
            {name: value.copy() for name, value in self.numpy_state_.items()}
            if getattr(self, "numpy_net_", None) is not None else {
                f"net.{name}": value.detach().cpu().numpy().copy()
                for name, value in self.network_.state_dict().items()
            })
        state["classes_"] = np.array(self.classes_, copy=True)
        state["n_features_in_"] = np.array(self.n_features_in_, dtype=np.int64)
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> CNN:
        """Rebuild the network from the settings and :meth:`state_dict` output
        (checked first: see :meth:`check_state`)."""
        self.check_state(state)
        classes = np.array(state["classes_"], copy=True)
        n_features = int(state["n_features_in_"])
        if not has_torch():  # the same network's forward pass, in NumPy
            from digitlab.models.cnn_numpy import NumpyCNN

            self.numpy_state_ = {name: np.array(value, copy=True)
                                 for name, value in state.items() if name.startswith("net.")}
            self.numpy_net_ = NumpyCNN(self.numpy_state_, image_side(n_features))
            self.classes_ = classes
            self.n_features_in_ = n_features
            return self
        network = build_network(image_side(n_features), len(classes), int(self.width), int(self.dense),
                                    int(self.convs))
        network.load_state_dict({
            name.removeprefix("net."): torch.from_numpy(np.array(value, copy=True))
            for name, value in state.items() if name.startswith("net.")
        })
        self.network_ = _channels_last(network).eval()
        self.classes_ = classes
        self.n_features_in_ = n_features
        return self

    def _state_spec(self, n_features: int, n_classes: int) -> dict[str, ArraySpec]:
        if not has_torch():  # the same names and shapes (a test compares both), without torch
            from digitlab.models.cnn_numpy import state_shapes

            shapes = state_shapes(image_side(n_features), n_classes, int(self.width),
                                  int(self.dense), int(self.convs))
            return {name: ArraySpec(shape, "int" if name.endswith("num_batches_tracked")
                                    else "float") for name, shape in shapes.items()}
        # The very network fit builds, on the meta device: shapes and dtypes without memory,
        # so a file claiming dense=10**9 costs nothing before its tensors are found not to fit.
        with torch.device("meta"):
            network = build_network(image_side(n_features), n_classes, int(self.width),
                                    int(self.dense), int(self.convs))
        return {
            f"net.{name}": ArraySpec(tuple(value.shape),
                                     "float" if value.is_floating_point() else "int")
            for name, value in network.state_dict().items()
        }

    def _state_note(self, n_features: int, n_classes: int) -> str:
        side = image_side(n_features)
        convs = f", convs={self.convs}" if self.convs != 1 else ""
        return f"width={self.width}, dense={self.dense}{convs} for {side}x{side} images"

    def summary(self) -> ModelSummary:
        """Kind, settings, and per layer: its type, output shape and parameter count
        (a dict that prints as a table, :class:`~digitlab.models.summary.ModelSummary`).

        Layers are named as Keras names them (``conv2d_1``, ``relu_2``); ``state_name``
        is the prefix of its arrays in :meth:`state_dict` (``net.0``).
        """
        check_is_fitted(self, "classes_")
        self._check_network("summary")
        side = image_side(self.n_features_in_)
        layers: list[dict[str, Any]] = []
        shape: tuple[int, ...] = (1, side, side)
        seen: dict[str, int] = {}
        with torch.inference_mode():
            x = torch.zeros((1, *shape))
            self.network_.eval()
            for index, layer in enumerate(self.network_):
                x = layer(x)
                kind = type(layer).__name__
                seen[kind] = seen.get(kind, 0) + 1
                layers.append({
                    "name": f"{kind.lower()}_{seen[kind]}",
                    "type": _layer_type(layer),
                    "state_name": f"net.{index}",
                    "layer": repr(layer),
                    "output_shape": list(x.shape[1:]),
                    "n_parameters": int(sum(p.numel() for p in layer.parameters())),
                })
        state = self.state_dict()
        return ModelSummary({
            "kind": self.kind,
            "settings": self.get_params(),
            "classes": self.classes_.tolist(),
            "layers": layers,
            "parameters": {name: list(value.shape) for name, value in state.items()
                           if name.startswith("net.")},
            "n_parameters": int(sum(layer["n_parameters"] for layer in layers)),
            # trained in this process (a model file does not record it)
            **({"training_precision": self.training_precision_}
               if hasattr(self, "training_precision_") else {}),
        })

    def _check_network(self, what: str) -> None:
        """A CNN loaded without torch only predicts (NumPy): say so instead of an AttributeError."""
        if getattr(self, "numpy_net_", None) is not None:
            raise SettingsError(f"the CNN's {what} needs PyTorch (this model was loaded without "
                                "it, for prediction only): pip install 'digitlab[torch]'")

    def hidden_weights(self) -> np.ndarray | None:
        """None: the first layer's 3x3 filters are not per-pixel weights over the image."""
        return None

    def first_filters(self) -> np.ndarray:
        """The first convolution's kernels, float32 (width, 3, 3): one per output channel,
        each over the single input (ink) channel. :func:`digitlab.plots.cnn_filters` draws them."""
        check_is_fitted(self, "classes_")
        self._check_network("first_filters")
        conv = self.network_[0]
        assert isinstance(conv, torch.nn.Conv2d)  # build_network starts with it
        return np.ascontiguousarray(conv.weight.detach().cpu().numpy()[:, 0])  # (w, 1, 3, 3) -> (w, 3, 3)

    def first_block(self, X: np.ndarray) -> np.ndarray:
        """What the first block (conv, pool, BN, ReLU) makes of features ``X`` (n, n_features):
        float32 (n, width, s/2, s/2), one map per channel, zero where the ReLU cut it off.
        :func:`digitlab.plots.cnn_activations` draws them."""
        check_is_fitted(self, "classes_")
        self._check_network("first_block")
        layers = list(self.network_)
        end = next(i for i, layer in enumerate(layers) if isinstance(layer, torch.nn.ReLU)) + 1
        block = torch.nn.Sequential(*layers[:end]).eval()  # the same modules: BN in eval mode
        device = next(self.network_.parameters()).device
        images = _to_images(np.asarray(X, dtype=np.float32), image_side(X.shape[1]), device)
        with torch.inference_mode():
            maps = block(images.contiguous(memory_format=torch.channels_last))
        return np.ascontiguousarray(maps.float().cpu().numpy())


def shift_fixed_numpy(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """:func:`_shift_fixed` in NumPy: images (n, s, s) moved by (dy, dx), zeros fill in."""
    s = images.shape[-1]
    m = max(abs(dy), abs(dx))
    padded = np.pad(images, ((0, 0), (m, m), (m, m)))
    return padded[:, m - dy : m - dy + s, m - dx : m - dx + s]


def _layer_type(layer: nn.Module) -> str:
    """A layer's type as a summary shows it: "Conv2d 3x3, 1 -> 32", "Linear 1568 -> 128"."""
    if isinstance(layer, torch.nn.Conv2d):
        h, w = layer.kernel_size
        return f"Conv2d {h}x{w}, {layer.in_channels} -> {layer.out_channels}"
    if isinstance(layer, torch.nn.Linear):
        return f"Linear {layer.in_features} -> {layer.out_features}"
    if isinstance(layer, torch.nn.MaxPool2d):
        size = layer.kernel_size
        return f"MaxPool2d {size}x{size}" if isinstance(size, int) else f"MaxPool2d {size}"
    if isinstance(layer, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
        return f"{type(layer).__name__} ({layer.num_features})"
    if isinstance(layer, torch.nn.Dropout):
        return f"Dropout p={layer.p:g}"
    return type(layer).__name__


def _channels_last(network: nn.Sequential) -> nn.Sequential:
    """The network with its weights in channels-last (NHWC) layout: oneDNN's fast path
    (twice as fast as NCHW for these convolutions on 2 CPU cores)."""
    # Module.to accepts memory_format at run time; torch's type stubs do not list it.
    return network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def _to_images(X: np.ndarray, side: int, device: torch.device) -> torch.Tensor:
    """Features (n, n_features) float32 as a tensor (n, 1, side, side) on ``device``."""
    return pixels_to_images(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)),
                            side).to(device)
