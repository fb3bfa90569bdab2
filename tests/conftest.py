"""Shared fixtures: small real data made from the bundled MNIST sample."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

# Under pytest-xdist each worker gets one thread for torch: two workers each
# spinning two OpenMP threads on two cores made the CNN tests ten times slower.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest

from digitlab.data.dataset import Dataset
from digitlab.data.sources import load_mnist_sample
from digitlab.models import MODELS, DigitClassifier

# Contract tests check behaviour, not accuracy: iterative models that would
# otherwise pick a long schedule for a small training set get a short one.
QUICK_SETTINGS: dict[str, dict[str, object]] = {"cnn": {"epochs": 2}}


@pytest.fixture(scope="session")
def sample() -> Dataset:
    """The bundled sample: 4,000 train / 1,000 test real MNIST digits."""
    return load_mnist_sample()


@pytest.fixture(scope="session")
def small_splits(sample: Dataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """50 train and 20 test digits (every class present), for writing test files."""
    return {
        "train": (sample.train_images[:50].copy(), sample.train_labels[:50].copy()),
        "test": (sample.test_images[:20].copy(), sample.test_labels[:20].copy()),
    }


@pytest.fixture(scope="session")
def seeded_model():
    """Factory: a fresh model of a kind, seeded when it draws random numbers, quick to fit."""

    def make(kind: str) -> DigitClassifier:
        model = MODELS[kind](**QUICK_SETTINGS.get(kind, {}))
        if "random_state" in model.get_params():
            model.set_params(random_state=0)
        return model

    return make


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's real data or cache folders."""
    base = tmp_path_factory.mktemp("digitlab-home")
    monkeypatch.setenv("DIGITLAB_DATA", str(base / "data"))
    monkeypatch.setenv("DIGITLAB_CACHE", str(base / "cache"))


@pytest.fixture(scope="session")
def served_model(sample: Dataset, tmp_path_factory: pytest.TempPathFactory):
    """A run folder as `digitlab train --out` leaves it, for the web tests: an MLP fitted
    on the bundled sample (94.7% test accuracy, good enough to read drawn digits),
    metrics.json, and a small report.html (the real one costs seconds of plotting)."""
    from digitlab.atomic import write_json
    from digitlab.io import save_model
    from digitlab.models import MLP

    out = tmp_path_factory.mktemp("served-run")
    model = MLP(random_state=0).fit(sample.features("train"), sample.train_labels)
    save_model(out / "model.safetensors", model, input_shape=sample.image_shape,
               class_names=sample.class_names, extra={"task": "all"})
    accuracy = model.score(sample.features("test"), sample.test_labels)
    write_json(out / "metrics.json", {"test": {"accuracy": accuracy}})
    (out / "report.html").write_text(
        "<!doctype html><title>report</title><h1>mlp on mnist-sample</h1>", encoding="utf-8")
    return out / "model.safetensors"


@contextlib.contextmanager
def _serve(model: Path, log_dir: Path, *options: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`digitlab serve MODEL --port 0 [options]` in a subprocess: the process and the base URL
    it prints.

    Its stderr goes to ``log_dir/serve-stderr.txt``; it is stopped with Ctrl-C
    (SIGINT) at the end unless it already stopped.
    """
    log = log_dir / "serve-stderr.txt"
    with log.open("w") as stderr, subprocess.Popen(
        [sys.executable, "-m", "digitlab.cli", "serve", str(model), "--port", "0", *options],
        stdout=subprocess.PIPE, stderr=stderr, text=True,
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # the address, printed once listening
            found = re.search(r"at (http://\S+/) ", line)
            assert found, f"serve printed {line!r}; stderr: {log.read_text()}"
            yield process, found.group(1)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()


@pytest.fixture(scope="session")
def serve_command():
    """A context manager running `digitlab serve` (see ``_serve``), for fixtures of any scope."""
    return _serve


# ---------------------------------------------------------------- memory-bounded runs

MEMORY_LIMIT = 1 << 30
_LIMITED_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from digitlab.errors import DataError
for code in sys.argv[1:]:
    try:
        exec(code)
    except DataError as exc:
        print("DataError:", exc, flush=True)
    except MemoryError:
        print("MemoryError", flush=True)
    else:
        print("returned", flush=True)
"""


@pytest.fixture(scope="session")
def limited_run():
    """Run each Python snippet in turn in one fresh process limited to 1 GiB of address space.

    Returns what each did, in order: ``"DataError: <message>"``,
    ``"MemoryError"`` or ``"returned"``; if the process dies, the last entry
    is ``"crashed ..."`` with the end of its stderr. A reader that reads a
    bomb (or /dev/zero) in full runs out of memory here at once instead of
    taking the test machine's; numpy, Pillow and digitlab fit in well under
    the limit. One process for several snippets: importing digitlab takes a
    second.
    """
    pytest.importorskip("resource")  # Unix only: the limit is set with setrlimit

    def run(*codes: str) -> list[str]:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        child = _LIMITED_CHILD.format(limit=MEMORY_LIMIT)
        done = subprocess.run([sys.executable, "-c", child, *codes], capture_output=True,
                              text=True, env=env, check=False)
        outcomes = done.stdout.splitlines()
        if done.returncode != 0:
            outcomes.append(f"crashed (exit {done.returncode}): {done.stderr[-800:]}")
        return outcomes

    return run


@pytest.fixture(scope="session")
def zero_png():
    """Factory: PNG bytes of a ``width`` x ``height`` image of zeros, built without the pixels.

    ``channels`` 4 is RGBA, 1 is grey. ``idat_bytes`` makes the compressed
    data unpack to that many bytes instead of the image's size. A 9,400 x
    9,400 RGBA image (353 MB of pixels) takes 0.3 MB and a few milliseconds:
    the deflate stream of a band of zeros is repeated (valid after a full
    flush), and the Adler-32 of n zeros is ``(n mod 65521) << 16 | 1``.
    """
    import struct
    import zlib

    def zlib_zeros(n: int) -> bytes:
        band = 1 << 24
        whole, rest = divmod(n, band)
        parts = []
        for size, times in ((band, whole), (rest, 1 if rest else 0)):
            packer = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate
            parts.append((packer.compress(bytes(size)) + packer.flush(zlib.Z_FULL_FLUSH)) * times)
        adler = ((n % 65521) << 16) | 1
        # zlib header, the blocks, an empty final block, the checksum
        return b"\x78\xda" + b"".join(parts) + b"\x03\x00" + adler.to_bytes(4, "big")

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    def make(width: int, height: int, *, channels: int = 4, idat_bytes: int | None = None) -> bytes:
        colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]  # grey, grey+alpha, RGB, RGBA
        n = height * (1 + width * channels) if idat_bytes is None else idat_bytes
        header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib_zeros(n))
                + chunk(b"IEND", b""))

    return make


@pytest.fixture
def any_feature_range() -> Iterator[None]:
    """For tests of a model's arithmetic on generic data (Gaussian blobs, points placed
    on a decision boundary): models refuse features outside [0, 1] otherwise."""
    from digitlab.models.base import features_outside_unit_range

    with features_outside_unit_range():
        yield
