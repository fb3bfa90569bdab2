"""Downloads of the full MNIST and Fashion-MNIST, checked by checksum and cached.

Each dataset is the four IDX ``.gz`` files in one folder under
:func:`data_home`. A file already there whose checksum matches is used as it
is, without touching the network. A missing file is fetched with pooch from
each mirror in turn: pooch streams it to a temporary file beside its final
name and moves it into place only once its checksum matches, so a corrupt or
tampered download is deleted, never cached. A cached copy that does not match
(truncated by an interrupted copy, say) is deleted before downloading again.

Environment variables, for users behind proxies and for tests:

- ``DIGITLAB_DATA``: the data home (default: the user cache folder);
- ``DIGITLAB_MNIST_MIRRORS``, ``DIGITLAB_FASHION_MIRRORS``: comma-separated
  base URLs tried in order instead of the public mirrors.

An explicit argument beats the environment, which beats the default.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitlab.errors import DataError

if TYPE_CHECKING:
    from types import ModuleType

    import requests


def _pooch() -> ModuleType:
    """pooch, imported on first use: pooch and requests cost about 0.1 s to import, and
    every run that loads data imports this module, though only a download needs them."""
    with warnings.catch_warnings():
        # pooch imports tqdm.auto when tqdm is installed, which in a Jupyter kernel without
        # ipywidgets warns "IProgress not found" the moment digitlab loads any data. digitlab
        # never draws tqdm's bars (downloads report through their own callback), so a
        # learner's notebook should not show that warning. cache.py imports pooch from here.
        warnings.filterwarnings("ignore", message="IProgress not found")
        import pooch
    return pooch


#: ``progress(file_name, bytes_done, bytes_total)``; ``bytes_total`` is 0 when
#: the server does not say.
Progress = Callable[[str, int, int], None]

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

#: SHA-256 of the published MNIST files (the same bytes on every mirror).
MNIST_REGISTRY: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "sha256:3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "sha256:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "sha256:f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: MD5 of the Fashion-MNIST files, as the Fashion-MNIST project publishes them.
FASHION_REGISTRY: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
#: Debian's ``dataset-fashion-mnist`` package installs the four files here.
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

DATA_ENV = "DIGITLAB_DATA"
MNIST_MIRRORS_ENV = "DIGITLAB_MNIST_MIRRORS"
FASHION_MIRRORS_ENV = "DIGITLAB_FASHION_MIRRORS"


def data_home() -> Path:
    """Where downloaded datasets live: ``$DIGITLAB_DATA``, else the user cache folder."""
    env = os.environ.get(DATA_ENV, "").strip()
    return Path(env).expanduser() if env else Path(_pooch().os_cache("digitlab"))


def fetch_mnist(
    *,
    data_home: Path | None = None,
    mirrors: Sequence[str] | None = None,
    registry: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> Path:
    """The folder holding the four MNIST IDX ``.gz`` files, downloading any missing.

    Parameters
    ----------
    data_home : Path, optional
        Parent of the ``mnist`` folder; default :func:`data_home`.
    mirrors : sequence of str, optional
        Base URLs tried in order; default ``$DIGITLAB_MNIST_MIRRORS``
        (comma-separated), else :data:`MNIST_MIRRORS`.
    registry : mapping of str to str, optional
        File name -> checksum (``"sha256:..."``, or bare hex for SHA-256);
        default :data:`MNIST_REGISTRY`. Its names are the files fetched.
    progress : callable, optional
        Called as ``progress(file_name, bytes_done, bytes_total)`` while
        downloading.

    Returns
    -------
    Path
        ``data_home / "mnist"``.

    Raises
    ------
    DataError
        When a file cannot be had from any mirror: none could be reached, or
        what they served did not match its checksum.
    """
    folder = _home(data_home) / "mnist"
    urls = _mirrors(mirrors, MNIST_MIRRORS_ENV, MNIST_MIRRORS)
    return _fetch_all(folder, MNIST_REGISTRY if registry is None else registry, urls, progress)


def fashion_mnist_folder(
    *,
    data_home: Path | None = None,
    system_dir: Path = FASHION_SYSTEM_DIR,
    mirrors: Sequence[str] | None = None,
    registry: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> Path:
    """A folder holding the four Fashion-MNIST IDX ``.gz`` files.

    Debian's copy in ``system_dir`` when it holds all four, used unchecked:
    Debian recompressed the files, so their checksums differ from upstream's,
    and they came through the system package manager, which checks its own.
    Otherwise they are downloaded to ``data_home / "fashion-mnist"``
    (``$DIGITLAB_FASHION_MIRRORS`` or :data:`FASHION_MIRRORS`), each checked
    against :data:`FASHION_REGISTRY`'s MD5. Parameters as :func:`fetch_mnist`.
    """
    if all((system_dir / name).is_file() for name in IDX_FILES):
        return system_dir
    folder = _home(data_home) / "fashion-mnist"
    urls = _mirrors(mirrors, FASHION_MIRRORS_ENV, FASHION_MIRRORS)
    return _fetch_all(folder, FASHION_REGISTRY if registry is None else registry, urls, progress)


# ---------------------------------------------------------------- the shared helper


def _fetch_all(
    folder: Path, registry: Mapping[str, str], mirrors: Sequence[str], progress: Progress | None
) -> Path:
    """Make sure every file of ``registry`` is in ``folder`` with its checksum."""
    with _quiet_pooch():
        for name, known_hash in registry.items():
            _fetch_one(folder / name, known_hash, mirrors, progress)
    return folder


def _fetch_one(
    dest: Path, known_hash: str, mirrors: Sequence[str], progress: Progress | None
) -> None:
    alg, expected = _split_hash(known_hash)
    if dest.is_file():
        if _digest(dest, alg) == expected:
            return  # cached and intact: no network at all
        dest.unlink()  # stale or corrupt; a good download would replace it anyway
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            dest.parent, f"cannot create the data folder ({exc.strerror or exc})"
        ) from None

    unreachable: list[str] = []  # "url (why)"
    mismatched: list[str] = []  # "got <hex> from url"
    for mirror in mirrors:
        url = mirror + dest.name
        downloader = _HashingDownloader(alg, dest.name, progress)
        try:
            # pooch downloads to a temporary file in dest's folder, checks the
            # hash and only then moves it to dest; on a mismatch it deletes the
            # temporary and raises ValueError.
            _pooch().retrieve(
                url,
                known_hash=f"{alg}:{expected}",
                fname=dest.name,
                path=dest.parent,
                downloader=downloader,
            )
        except _requests().RequestException as exc:  # before OSError: it is a subclass
            unreachable.append(f"{url} ({_why(exc)})")
        except ValueError:
            if downloader.got is None:  # not a checksum mismatch: a bug, not a mirror
                raise
            mismatched.append(f"got {downloader.got} from {url}")
        except OSError as exc:  # the disk, not the mirror: trying others will not help
            raise DataError(dest, f"cannot write the download ({exc.strerror or exc})") from None
        else:
            return

    if mismatched:
        problem = (
            f"download rejected: {alg.upper()} checksum did not match "
            f"(expected {expected}, {'; '.join(mismatched)})"
        )
        if unreachable:
            problem += f"; other mirrors could not be reached: {'; '.join(unreachable)}"
    else:
        problem = f"cannot download: no mirror could be reached: {'; '.join(unreachable)}"
    raise DataError(dest, problem)


class _HashingDownloader:
    """pooch's HTTP downloader, remembering the digest of what it fetched.

    pooch deletes a download whose hash does not match before we can look at
    it; this keeps the digest it got so the error can say "expected X, got Y"
    (and tells a checksum mismatch from any other ValueError).
    """

    def __init__(self, alg: str, name: str, progress: Progress | None) -> None:
        self.alg = alg
        self.got: str | None = None
        bar = _ProgressAdapter(name, progress) if progress is not None else False
        self._http = _pooch().HTTPDownloader(progressbar=bar)

    def __call__(self, url: str, output_file: str, pooch_obj: Any, check_only: bool = False) -> Any:
        result = self._http(url, output_file, pooch_obj, check_only=check_only)
        if not check_only:
            self.got = _digest(Path(output_file), self.alg)
        return result


class _ProgressAdapter:
    """The progress-bar interface pooch drives (total, update, reset, close) -> a callback."""

    def __init__(self, name: str, callback: Progress) -> None:
        self.name = name
        self.callback = callback
        self.total = 0
        self.done = 0

    def update(self, n: int) -> None:
        self.done += n
        # pooch counts whole chunks, so the last one may overshoot the total.
        done = min(self.done, self.total) if self.total else self.done
        self.callback(self.name, done, self.total)

    def reset(self) -> None:
        self.done = 0

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- small pieces


def _home(explicit: Path | None) -> Path:
    return Path(explicit).expanduser() if explicit is not None else data_home()


def _mirrors(explicit: Sequence[str] | None, env_name: str, default: Sequence[str]) -> list[str]:
    """Mirror base URLs, each ending in "/": argument, else environment, else default."""
    if explicit is None:
        env = os.environ.get(env_name, "")
        explicit = [m for m in (part.strip() for part in env.split(",")) if m] or default
    if isinstance(explicit, str):
        explicit = [explicit]  # a lone URL, not a sequence of one-letter mirrors
    mirrors = []
    for mirror in explicit:
        if not mirror.startswith(("http://", "https://")):
            raise DataError(mirror, f"mirror is not an http:// or https:// URL (see ${env_name})")
        mirrors.append(mirror if mirror.endswith("/") else mirror + "/")
    if not mirrors:
        raise DataError(env_name, "no mirrors to download from")
    return mirrors


def _split_hash(known_hash: str) -> tuple[str, str]:
    """``"md5:abc"`` -> ``("md5", "abc")``; a bare digest is SHA-256, as in pooch."""
    alg, _, digest = known_hash.rpartition(":")
    return (alg.lower() or "sha256"), digest.lower()


def _digest(path: Path, alg: str) -> str:
    return str(_pooch().file_hash(str(path), alg=alg)).lower()


def _requests() -> ModuleType:
    """requests, imported with pooch: only when downloading."""
    import requests

    return requests


def _why(exc: requests.RequestException) -> str:
    """A few words on why a request failed, instead of urllib3's paragraph."""
    requests = _requests()
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}".strip()
    if isinstance(exc, requests.Timeout):
        return "timed out"
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    if match:
        return match[1].strip()
    return type(exc).__name__


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """Library code never prints: hold pooch's logger (it writes to stderr) at WARNING."""
    logger = _pooch().get_logger()
    level = logger.level
    logger.setLevel("WARNING")
    try:
        yield
    finally:
        logger.setLevel(level)
