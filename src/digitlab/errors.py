"""The errors digitlab raises on purpose.

The command line turns each of them into one line and exit code 2; anything
else that escapes is a bug.
"""

from __future__ import annotations

import os


class DigitlabError(Exception):
    """Base class of every error digitlab raises deliberately."""


class PathError(DigitlabError):
    """A problem with one file or folder: the message is ``<path>: <problem>``, on one line.

    Parameters
    ----------
    source : str or path-like
        The file, folder or dataset name the problem was found in.
    problem : str
        What is wrong, in a few words ("truncated PNG", "wrong magic number").
    """

    def __init__(self, source: str | os.PathLike[str], problem: str) -> None:
        self.source = os.fspath(source)
        self.problem = problem
        super().__init__(f"{show_path(self.source)}: {problem}")

    def __reduce__(self) -> tuple[type[PathError], tuple[str, str]]:
        # Rebuilt from (source, problem), so it survives the trip back from a worker process.
        return (type(self), (self.source, self.problem))


class DataError(PathError, ValueError):
    """Bad input data: names the file (or source) and what is wrong with it."""


class OutputError(PathError, OSError):
    """Output cannot go where it was asked to (not a folder, read-only, disk full).

    Also an ``OSError``, so code that treats a failed write as optional (the
    image-tree cache) catches it as before.
    """


def show_path(path: str | os.PathLike[str]) -> str:
    """A path as it reads in a one-line message: as is when plain, else quoted.

    A name with spaces, quotes, backslashes or control characters (a newline
    in a file name is legal on Linux) is shown as a Python string literal, so
    it cannot split the message or hide where the name ends.
    """
    text = os.fspath(path)
    if text and text.isprintable() and not any(c in text for c in " '\"\\"):
        return text
    return repr(text)


class DataWarning(UserWarning):
    """Something in the data was skipped or converted; loading went on.

    Library code warns (``warnings.warn(..., DataWarning)``) instead of
    printing; the command line shows each warning as one line.
    """


class SettingsError(DigitlabError, ValueError):
    """A model or run setting with a value it cannot take (``metric="cosine"``)."""
