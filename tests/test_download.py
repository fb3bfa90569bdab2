"""Downloads against a real HTTP server on 127.0.0.1 serving IDX files the tests write.

No test reaches any other host: an autouse fixture points the data home at a
temporary folder and both mirror variables at a closed local port, so a test
that forgets to choose its mirrors fails instead of going to the internet.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pooch
import pytest

from digitlab.data import download, formats, sources
from digitlab.errors import DataError

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@dataclass
class Server:
    root: Path  # the folder served
    url: str  # its URL, ending in "/"
    requests: list[str] = field(default_factory=list)  # request paths, in order


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A threaded HTTP server on a free port serving a temporary folder."""
    root = tmp_path_factory.mktemp("served")
    seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet

        def do_GET(self) -> None:
            seen.append(self.path)  # every request, served or not
            super().do_GET()

        def do_HEAD(self) -> None:
            seen.append(self.path)
            super().do_HEAD()

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    # A short poll so shutdown() returns at once instead of after half a second.
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield Server(root=root, url=f"http://127.0.0.1:{httpd.server_port}/", requests=seen)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DIGITLAB_DATA", str(tmp_path / "env-home"))
    dead = closed_port_url()
    monkeypatch.setenv("DIGITLAB_MNIST_MIRRORS", dead)
    monkeypatch.setenv("DIGITLAB_FASHION_MIRRORS", dead)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # a proxy must not see the local server


def publish(folder: Path, splits: Splits, *, alg: str = "sha256") -> dict[str, str]:
    """Write the four IDX .gz files into ``folder``; return their registry."""
    formats.write_idx_folder(folder, splits)
    return {
        name: f"{alg}:{hashlib.new(alg, (folder / name).read_bytes()).hexdigest()}"
        for name in download.IDX_FILES
    }


def assert_same(folder: Path, splits: Splits) -> None:
    got = formats.read_idx_folder(folder)
    assert got.keys() == splits.keys()
    for split, (images, labels) in splits.items():
        np.testing.assert_array_equal(got[split][0], images)
        np.testing.assert_array_equal(got[split][1], labels)
        assert got[split][0].dtype == np.uint8
        assert got[split][1].dtype == np.int64


def corrupt(path: Path) -> None:
    """Flip the bits of a few bytes in the middle of a file."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 4):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- MNIST


def test_download_then_read_back(server: Server, small_splits: Splits, tmp_path: Path) -> None:
    registry = publish(server.root / "mnist", small_splits)
    home = tmp_path / "home"
    folder = download.fetch_mnist(
        data_home=home, mirrors=[server.url + "mnist/"], registry=registry
    )
    assert folder == home / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(download.IDX_FILES)
    assert sorted(server.requests) == sorted(f"/mnist/{name}" for name in download.IDX_FILES)
    assert_same(folder, small_splits)


def test_second_call_makes_no_request(server: Server, small_splits: Splits, tmp_path: Path) -> None:
    registry = publish(server.root / "mnist", small_splits)
    fetch = functools.partial(
        download.fetch_mnist, data_home=tmp_path, mirrors=[server.url + "mnist/"], registry=registry
    )
    fetch()
    assert len(server.requests) == 4
    assert fetch() == tmp_path / "mnist"
    assert len(server.requests) == 4


def test_present_files_need_no_mirror(small_splits: Splits, tmp_path: Path) -> None:
    registry = publish(tmp_path / "mnist", small_splits)
    folder = download.fetch_mnist(
        data_home=tmp_path, mirrors=[closed_port_url()], registry=registry
    )
    assert_same(folder, small_splits)


def test_only_missing_files_are_downloaded(
    server: Server, small_splits: Splits, tmp_path: Path
) -> None:
    registry = publish(server.root / "mnist", small_splits)
    publish(tmp_path / "mnist", small_splits)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    download.fetch_mnist(data_home=tmp_path, mirrors=[server.url + "mnist/"], registry=registry)
    assert server.requests == ["/mnist/t10k-labels-idx1-ubyte.gz"]


def test_corrupt_download_is_rejected_and_not_cached(
    server: Server, small_splits: Splits, tmp_path: Path
) -> None:
    registry = publish(server.root / "mnist", small_splits)
    bad = "train-labels-idx1-ubyte.gz"
    corrupt(server.root / "mnist" / bad)
    got = hashlib.sha256((server.root / "mnist" / bad).read_bytes()).hexdigest()
    with pytest.raises(DataError, match="checksum did not match") as info:
        download.fetch_mnist(data_home=tmp_path, mirrors=[server.url + "mnist/"], registry=registry)
    assert info.value.source == str(tmp_path / "mnist" / bad)
    assert registry[bad].removeprefix("sha256:") in info.value.problem
    assert got in info.value.problem
    # The file before it was kept; nothing of the rejected one (nor a temporary) is left.
    assert [p.name for p in (tmp_path / "mnist").iterdir()] == ["train-images-idx3-ubyte.gz"]


def test_corrupt_first_mirror_falls_back_to_a_good_one(
    server: Server, small_splits: Splits, tmp_path: Path
) -> None:
    registry = publish(server.root / "good", small_splits)
    publish(server.root / "bad", small_splits)
    for name in download.IDX_FILES:
        corrupt(server.root / "bad" / name)
    mirrors = [server.url + "bad/", server.url + "good/"]
    folder = download.fetch_mnist(data_home=tmp_path, mirrors=mirrors, registry=registry)
    assert_same(folder, small_splits)


def test_corrupt_cached_file_is_replaced(
    server: Server, small_splits: Splits, tmp_path: Path
) -> None:
    registry = publish(server.root / "mnist", small_splits)
    publish(tmp_path / "mnist", small_splits)
    corrupt(tmp_path / "mnist" / "train-images-idx3-ubyte.gz")
    folder = download.fetch_mnist(
        data_home=tmp_path, mirrors=[server.url + "mnist/"], registry=registry
    )
    assert server.requests == ["/mnist/train-images-idx3-ubyte.gz"]
    assert_same(folder, small_splits)


def test_corrupt_cached_file_is_removed_even_when_offline(
    small_splits: Splits, tmp_path: Path
) -> None:
    registry = publish(tmp_path / "mnist", small_splits)
    cached = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    corrupt(cached)
    with pytest.raises(DataError, match="no mirror could be reached"):
        download.fetch_mnist(data_home=tmp_path, mirrors=[closed_port_url()], registry=registry)
    assert not cached.exists()


def test_first_mirror_down_second_works(
    server: Server, small_splits: Splits, tmp_path: Path
) -> None:
    registry = publish(server.root / "mnist", small_splits)
    mirrors = [closed_port_url(), server.url + "missing/", server.url + "mnist/"]
    folder = download.fetch_mnist(data_home=tmp_path, mirrors=mirrors, registry=registry)
    assert_same(folder, small_splits)
    # The 404 mirror was asked for each file before the good one.
    assert server.requests[:2] == [
        "/missing/train-images-idx3-ubyte.gz",
        "/mnist/train-images-idx3-ubyte.gz",
    ]


def test_all_mirrors_failing_is_a_data_error(
    server: Server, small_splits: Splits, tmp_path: Path
) -> None:
    registry = publish(tmp_path / "published", small_splits)
    dead, missing = closed_port_url(), server.url + "missing/"
    with pytest.raises(DataError, match="no mirror could be reached") as info:
        download.fetch_mnist(
            data_home=tmp_path / "home", mirrors=[dead, missing], registry=registry
        )
    problem = info.value.problem
    assert info.value.source == str(tmp_path / "home" / "mnist" / "train-images-idx3-ubyte.gz")
    assert dead in problem
    assert "HTTP 404" in problem
    assert list((tmp_path / "home" / "mnist").iterdir()) == []


def test_env_overrides_data_home_and_mirrors(
    server: Server, small_splits: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = publish(server.root / "mnist", small_splits)
    monkeypatch.setenv("DIGITLAB_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("DIGITLAB_MNIST_MIRRORS", f" {closed_port_url()} ,{server.url}mnist")
    folder = download.fetch_mnist(registry=registry)
    assert folder == tmp_path / "env" / "mnist"
    assert_same(folder, small_splits)


def test_explicit_mirrors_beat_the_env(
    server: Server, small_splits: Splits, tmp_path: Path
) -> None:
    # The autouse fixture's env mirror is a closed port; the argument wins.
    registry = publish(server.root / "mnist", small_splits)
    download.fetch_mnist(data_home=tmp_path, mirrors=[server.url + "mnist/"], registry=registry)
    assert len(server.requests) == 4


def test_a_mirror_that_is_not_http_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not an http"):
        download.fetch_mnist(data_home=tmp_path, mirrors=["ftp.example.invalid/mnist/"])


def test_progress_is_reported(server: Server, small_splits: Splits, tmp_path: Path) -> None:
    registry = publish(server.root / "mnist", small_splits)
    calls: list[tuple[str, int, int]] = []
    download.fetch_mnist(
        data_home=tmp_path,
        mirrors=[server.url + "mnist/"],
        registry=registry,
        progress=lambda *args: calls.append(args),
    )
    for name in download.IDX_FILES:
        size = (server.root / "mnist" / name).stat().st_size
        mine = [c for c in calls if c[0] == name]
        assert mine, name
        assert mine[-1] == (name, size, size)
        assert all(0 <= done <= total == size for _, done, total in mine)


def test_pooch_logs_nothing_and_its_level_is_restored(
    server: Server, small_splits: Splits, tmp_path: Path
) -> None:
    # pooch logs each download at INFO to stderr; library code must stay silent.
    registry = publish(server.root / "mnist", small_splits)
    logger = pooch.get_logger()
    records: list[logging.LogRecord] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Recorder()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        download.fetch_mnist(data_home=tmp_path, mirrors=[server.url + "mnist/"], registry=registry)
        assert logger.level == logging.DEBUG
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert records == []


def test_data_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DIGITLAB_DATA", str(tmp_path))
    assert download.data_home() == tmp_path
    monkeypatch.delenv("DIGITLAB_DATA")
    assert download.data_home() == pooch.os_cache("digitlab")


def test_default_registry_is_the_published_mnist() -> None:
    assert tuple(download.MNIST_REGISTRY) == download.IDX_FILES
    assert download.MNIST_REGISTRY["train-images-idx3-ubyte.gz"] == (
        "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    )
    assert all(h.startswith("md5:") for h in download.FASHION_REGISTRY.values())


# ---------------------------------------------------------------- Fashion-MNIST


def test_fashion_prefers_the_system_copy(small_splits: Splits, tmp_path: Path) -> None:
    system = tmp_path / "system"
    publish(system, small_splits)
    corrupt(system / "t10k-labels-idx1-ubyte.gz")  # not checked: Debian's files differ anyway
    folder = download.fashion_mnist_folder(
        data_home=tmp_path / "home", system_dir=system, mirrors=[closed_port_url()]
    )
    assert folder == system
    assert not (tmp_path / "home").exists()


def test_fashion_downloads_without_a_system_copy(
    server: Server, small_splits: Splits, tmp_path: Path
) -> None:
    registry = publish(server.root / "fashion", small_splits, alg="md5")
    partial = tmp_path / "system"
    publish(partial, small_splits)
    (partial / "train-images-idx3-ubyte.gz").unlink()  # three of four is not a copy
    folder = download.fashion_mnist_folder(
        data_home=tmp_path / "home",
        system_dir=partial,
        mirrors=[server.url + "fashion/"],
        registry=registry,
    )
    assert folder == tmp_path / "home" / "fashion-mnist"
    assert_same(folder, small_splits)


def test_fashion_md5_mismatch_is_rejected(
    server: Server, small_splits: Splits, tmp_path: Path
) -> None:
    registry = publish(server.root / "fashion", small_splits, alg="md5")
    corrupt(server.root / "fashion" / "train-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match="MD5 checksum did not match"):
        download.fashion_mnist_folder(
            data_home=tmp_path,
            system_dir=tmp_path / "none",
            mirrors=[server.url + "fashion/"],
            registry=registry,
        )
    assert list((tmp_path / "fashion-mnist").iterdir()) == []


def test_fashion_env_mirrors(
    server: Server, small_splits: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = publish(server.root / "fashion", small_splits, alg="md5")
    monkeypatch.setenv("DIGITLAB_FASHION_MIRRORS", server.url + "fashion/")
    folder = download.fashion_mnist_folder(system_dir=tmp_path / "none", registry=registry)
    assert folder == tmp_path / "env-home" / "fashion-mnist"
    assert_same(folder, small_splits)


# ---------------------------------------------------------------- end to end


def test_sources_load_mnist_downloads(
    server: Server, small_splits: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real registry cannot match files made here, so the module's table is
    # swapped for theirs; everything else (env, mirrors, pooch, reading) is real.
    registry = publish(server.root / "mnist", small_splits)
    monkeypatch.setattr(download, "MNIST_REGISTRY", registry)
    monkeypatch.setenv("DIGITLAB_MNIST_MIRRORS", f"{closed_port_url()},{server.url}mnist/")
    dataset = sources.load("mnist")
    np.testing.assert_array_equal(dataset.train_images, small_splits["train"][0])
    np.testing.assert_array_equal(dataset.train_labels, small_splits["train"][1])
    np.testing.assert_array_equal(dataset.test_images, small_splits["test"][0])
    np.testing.assert_array_equal(dataset.test_labels, small_splits["test"][1])
    assert (tmp_path / "env-home" / "mnist" / "train-images-idx3-ubyte.gz").is_file()


def test_sources_load_mnist_with_the_real_hashes_refuses_other_files(
    server: Server, small_splits: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the published hashes, files that are not MNIST never get through.
    publish(server.root / "mnist", small_splits)
    monkeypatch.setenv("DIGITLAB_MNIST_MIRRORS", server.url + "mnist/")
    with pytest.raises(DataError, match="SHA256 checksum did not match"):
        sources.load("mnist")
    assert list((tmp_path / "env-home" / "mnist").iterdir()) == []
