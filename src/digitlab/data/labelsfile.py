"""A flat folder of images and a labels file -> the files of each split and their labels.

The layout teams keep their own digits in::

    scans/labels.csv        filename,label
    scans/0001.jpg          0001.jpg,7
    scans/0002.jpg          0002.jpg,2
    ...

Rules:

- The labels file is ``labels.csv`` in the folder (unless the folder holds
  class or split folders: then it is a tree, and labels.csv a stray file), or
  any file named with ``--labels FILE`` (``labels=`` in Python). File names in it are relative to
  the image folder; sub-folders are allowed (``batch2/0001.jpg``), absolute
  names and ``..`` are not. A name without a suffix (``0001``) means the one
  image of that name (``0001.jpg``).
- The first row is a header naming the columns. The file column may be called
  ``filename``, ``file``, ``image``, ``path`` (:data:`FILE_COLUMNS`) and the
  label column ``label``, ``class``, ``digit``, ``target`` (:data:`LABEL_COLUMNS`);
  case, spaces, ``_`` and ``-`` do not matter, and other columns are ignored.
  An optional ``split`` column (``train`` / ``test``) says which split each
  image belongs to; without one, the Dataset holds out the usual stratified
  ``--test-fraction``. A file whose first row is already data
  (``0001.jpg,7``) is read as ``file,label`` without a header.
- Labels are class numbers (:data:`~digitlab.data.formats.LABEL_RULE`).
- Every image file in the folder (and in each sub-folder the labels file
  names) must be listed: an unlisted image is a mistake to catch, not a
  digit to drop in silence. Hidden files and known stray files
  (``.DS_Store``, ``Thumbs.db``) are not images; other non-image files (a
  README) are ignored.

Each problem is one :class:`~digitlab.errors.DataError` naming the labels file
and its line (1-based, counting every line): a missing image, a file listed
twice, a label that is not a class number, an empty file, a header without a
file or label column, a file larger than :data:`MAX_LABELS_BYTES`, text that
is not UTF-8, binary data. An image that is not listed is named itself.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path, PurePosixPath

import numpy as np

from digitlab.data import files
from digitlab.data.formats import LABEL_RULE, MAX_LABEL, as_labels
from digitlab.data.imagetree import IMAGE_EXTENSIONS, STRAY_NAMES, Listing
from digitlab.errors import DataError

LABELS_FILE = "labels.csv"
"""The labels file a flat folder of images is recognised by."""
MAX_LABELS_BYTES = 64 << 20
"""The largest labels file read: 64 MiB, over a million lines of ``filename,label``."""

# Header names, compared lower case with spaces, "_" and "-" removed.
FILE_COLUMNS = frozenset({"filename", "file", "filepath", "fname", "name", "path", "image",
                          "imagename", "imagefile", "imagepath", "img", "imageid", "id"})
LABEL_COLUMNS = frozenset({"label", "labels", "class", "classid", "classlabel", "digit",
                           "target", "y", "category"})
SPLIT_COLUMNS = frozenset({"split", "subset"})
SPLIT_VALUES = {"train": "train", "training": "train", "test": "test", "testing": "test"}

_LABEL = re.compile(r"[0-9]{1,6}")  # longer runs of digits are beyond MAX_LABEL anyway
_SEPARATORS = re.compile(r"[\s_\-]+")


def has_labels_file(folder: str | Path) -> bool:
    """Whether ``folder`` holds a ``labels.csv``, which makes it a flat folder of images.

    Anything of that name counts (a dangling link, a pipe): reading it then says what is
    wrong with it, rather than the folder being misread as a tree of class folders.
    """
    path = Path(folder) / LABELS_FILE
    return path.exists() or path.is_symlink()


def list_labelled_folder(folder: str | Path, labels: str | Path | None = None) -> Listing:
    """The images of a flat folder and their labels, checked but not decoded.

    Parameters
    ----------
    folder : str or Path
        The folder of images.
    labels : str or Path, optional
        The labels file; by default ``folder / "labels.csv"``.

    Returns
    -------
    listing : dict
        ``{"train": (paths, labels)}``, and ``"test"`` when a split column
        puts images there; images in the labels file's order, labels int64.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "a labels file needs a folder of images" if folder.exists()
                        else "no such folder")
    path = folder / LABELS_FILE if labels is None else Path(labels).expanduser()
    rows = _Rows(path, _read_text(path))
    table = _Table(folder, path)
    for number, cells in rows:
        table.add(number, cells, rows.columns)
    return table.listing()


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError(path, "no such labels file")
    data = files.read_file(path, limit=MAX_LABELS_BYTES)  # regular files only; size checked
    if not data.strip():
        raise DataError(path, "labels file is empty: expected a header such as filename,label "
                        "and one line per image")
    if b"\0" in data:
        line = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise DataError(path, f"line {line} holds NUL bytes: binary data, not a CSV labels file")
    try:
        return data.decode("utf-8-sig")  # Excel writes a byte order mark
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(path, f"line {line} is not UTF-8 text; is this a CSV labels file?") from None


class _Columns:
    """Where the file name, label and (optional) split are in each row."""

    def __init__(self, path: Path, number: int, first: list[str]) -> None:
        self.header = not _is_data_row(first)
        if not self.header:  # file,label without a header
            self.file, self.label, self.split = 0, 1, None
            return
        names = [_SEPARATORS.sub("", cell.strip().lower()) for cell in first]
        file = _find(names, FILE_COLUMNS)
        label = _find(names, LABEL_COLUMNS)
        shown = ",".join(cell.strip() for cell in first)
        if file is None or label is None:
            missing = "file-name column (filename, file, image or path)" if file is None \
                else "label column (label, class, digit or target)"
            raise DataError(path, f"line {number}: the header {shown!r} names no {missing}")
        self.file, self.label, self.split = file, label, _find(names, SPLIT_COLUMNS)

    @property
    def needed(self) -> int:
        return max(self.file, self.label, -1 if self.split is None else self.split) + 1


def _find(names: list[str], wanted: frozenset[str]) -> int | None:
    return next((i for i, name in enumerate(names) if name in wanted), None)


def _is_data_row(cells: list[str]) -> bool:
    """``0001.jpg,7``: an image file name, then a whole number -- not a header."""
    return (len(cells) >= 2 and Path(cells[0].strip()).suffix.lower() in IMAGE_EXTENSIONS
            and _LABEL.fullmatch(cells[1].strip()) is not None)


class _Rows:
    """The labels file's non-blank rows after the header: ``(line number, cells)``."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.reader = csv.reader(io.StringIO(text, newline=""))
        first = self._next()
        if first is None:  # only blank lines (read_text refuses a file of whitespace)
            raise DataError(path, "labels file is empty")
        number, cells = first
        self.columns = _Columns(path, number, cells)
        self.pending: tuple[int, list[str]] | None = None if self.columns.header else first

    def _next(self) -> tuple[int, list[str]] | None:
        try:
            for cells in self.reader:
                if any(cell.strip() for cell in cells):
                    return self.reader.line_num, cells
        except csv.Error as exc:
            raise DataError(self.path, f"line {self.reader.line_num}: not CSV ({exc})") from None
        return None

    def __iter__(self) -> _Rows:
        return self

    def __next__(self) -> tuple[int, list[str]]:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            return pending
        row = self._next()
        if row is None:
            raise StopIteration
        return row


class _Table:
    """The rows read so far, checked against the folder's files."""

    def __init__(self, folder: Path, path: Path) -> None:
        self.folder, self.path = folder, path
        self.seen: dict[str, int] = {}  # file (relative, as resolved) -> line listed on
        self.folders: dict[str, _Contents] = {}  # relative folder -> its files
        self.files: dict[str, list[str]] = {"train": [], "test": []}
        self.labels: dict[str, list[int]] = {"train": [], "test": []}

    def add(self, number: int, cells: list[str], columns: _Columns) -> None:
        if len(cells) < columns.needed:
            shown = ",".join(cells)
            raise DataError(self.path, f"line {number}: expected {columns.needed} columns, got "
                            f"{len(cells)} ({shown[:80]!r})")
        name = self._image(number, cells[columns.file].strip())
        label = self._label(number, cells[columns.label].strip())
        split = "train"
        if columns.split is not None:
            value = cells[columns.split].strip()
            if value.lower() not in SPLIT_VALUES:
                raise DataError(self.path, f"line {number}: split {value[:40]!r} is not train or test")
            split = SPLIT_VALUES[value.lower()]
        self.files[split].append(os.fspath(self.folder / name))
        self.labels[split].append(label)

    def _image(self, number: int, text: str) -> str:
        """The listed file, relative to the folder, checked to exist and to be new."""
        if not text:
            raise DataError(self.path, f"line {number}: the file name is empty")
        relative = PurePosixPath(text.replace("\\", "/"))
        if relative.is_absolute() or ".." in relative.parts or relative.as_posix() == ".":
            raise DataError(self.path, f"line {number}: {text[:80]!r} is not a file inside "
                            f"{self.folder}; names are relative to the image folder")
        parent, name = relative.parent.as_posix(), relative.name
        contents = self._contents(parent)
        if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
            stems = contents.by_stem.get(name, [])
            if len(stems) == 1:  # "0001" for 0001.jpg: an id column without suffixes
                name = stems[0]
            elif name not in contents.names:
                raise DataError(self.path, f"line {number}: no image {text[:80]!r} in "
                                f"{self.folder}" + (f" ({len(stems)} images of that name)"
                                                   if stems else ""))
            else:
                raise DataError(self.path, f"line {number}: {text[:80]!r} is not an image file "
                                f"(expected one of {', '.join(sorted(IMAGE_EXTENSIONS))})")
        elif name not in contents.names:
            raise DataError(self.path, f"line {number}: no image {text[:80]!r} in {self.folder}")
        key = name if parent == "." else f"{parent}/{name}"
        if key in self.seen:
            raise DataError(self.path, f"line {number}: {key[:80]!r} is listed twice (also on "
                            f"line {self.seen[key]})")
        self.seen[key] = number
        return key

    def _contents(self, parent: str) -> _Contents:
        if parent not in self.folders:
            self.folders[parent] = _Contents(self.folder / parent, self.path)
        return self.folders[parent]

    def _label(self, number: int, text: str) -> int:
        if _LABEL.fullmatch(text) is None:
            too_big = text.isdecimal() and text.isascii()
            problem = "is too large for a class" if too_big else "is not a class number"
            raise DataError(self.path, f"line {number}: label {text[:40]!r} {problem} ({LABEL_RULE})")
        label = int(text)
        if label > MAX_LABEL:
            raise DataError(self.path, f"line {number}: label {label} is too large for a class "
                            f"({LABEL_RULE})")
        return label

    def listing(self) -> Listing:
        if not self.seen:
            raise DataError(self.path, "labels file lists no images (only a header)")
        self._check_all_listed()
        if not self.files["train"]:
            raise DataError(self.path, "every image is in the test split: none is left to train on")
        return {split: (self.files[split], as_labels(np.array(self.labels[split], dtype=np.int64),
                                                     self.path))
                for split in ("train", "test") if self.files[split]}

    def _check_all_listed(self) -> None:
        for parent, contents in sorted(self.folders.items()):
            prefix = "" if parent == "." else f"{parent}/"
            unlisted = sorted(name for name in contents.images if prefix + name not in self.seen)
            if unlisted:
                more = f" ({len(unlisted)} images there are not)" if len(unlisted) > 1 else ""
                raise DataError(contents.folder / unlisted[0],
                                f"image is not listed in {self.path}{more}")


class _Contents:
    """The files of one folder the labels file names files in."""

    def __init__(self, folder: Path, labels_path: Path) -> None:
        self.folder = folder
        try:
            with os.scandir(folder) as entries:
                self.names = {entry.name for entry in entries if not entry.is_dir()}
        except FileNotFoundError:
            self.names = set()
        except OSError as exc:
            raise DataError(folder, f"cannot read: {exc.strerror or exc}") from None
        self.images = [name for name in self.names
                       if name[0] != "." and name.lower() not in STRAY_NAMES
                       and Path(name).suffix.lower() in IMAGE_EXTENSIONS]
        self.by_stem: dict[str, list[str]] = {}
        for name in self.images:
            self.by_stem.setdefault(Path(name).stem, []).append(name)
