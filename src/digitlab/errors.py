"""The errors digitlab raises on purpose.

The command line turns each of them into one line and exit code 2; anything
else that escapes is a bug.
"""

from __future__ import annotations

import os


class DigitlabError(Exception):
    """Base class of every error digitlab raises deliberately."""


class DataError(DigitlabError, ValueError):
    """Bad input data: names the file (or source) and what is wrong with it.

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
        super().__init__(f"{self.source}: {problem}")

    def __reduce__(self) -> tuple[type[DataError], tuple[str, str]]:
        # Rebuilt from (source, problem), so it survives the trip back from a worker process.
        return (type(self), (self.source, self.problem))


class DataWarning(UserWarning):
    """Something in the data was skipped or converted; loading went on.

    Library code warns (``warnings.warn(..., DataWarning)``) instead of
    printing; the command line shows each warning as one line.
    """


class SettingsError(DigitlabError, ValueError):
    """A model or run setting with a value it cannot take (``metric="cosine"``)."""
