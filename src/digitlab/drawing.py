"""Figures as recipes, and a drawing process started before a run needs it.

A ``digitlab train --model majority`` spends about as long importing
matplotlib and drawing its figures as on everything else. A figure needs only
a few arrays and strings, so :func:`digitlab.inspection.inspect_model` records
most figures as a :class:`Recipe` (which plotting function, with which
arguments) instead of drawing them. :func:`start_drawer` forks a process at the
start of the command; it imports matplotlib on the second core while the run
loads the data, then waits. The run sends it the figures of the data alone
(average digits, one digit's values) as soon as the data is loaded, drawn while
the run imports scikit-learn and trains; then the model's figures, drawn on both
cores (:func:`digitlab.plots.png_bytes_all`) while the run writes its files.
Recipes travel pickled (a recipe is a name and arrays); the PNGs come back. This module imports
neither matplotlib nor :mod:`digitlab.plots` itself, so a run that draws through
the drawer never imports matplotlib.

The bytes are those :func:`digitlab.plots.png_bytes` writes for the recipe's
figure drawn here (tested): a run folder is the same with or without a drawer.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Recipe:
    """A figure not yet drawn: ``digitlab.plots.<function>(*args, **kwargs)``.

    Its arguments are arrays, strings and numbers (picklable, small), so another
    process can draw it; calling it builds the Figure here.
    """

    function: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> Figure:
        figure: Figure = getattr(plotting(), self.function)(*self.args, **self.kwargs)
        return figure


def plotting() -> Any:
    """:mod:`digitlab.plots`, imported at first use. Modules that draw only sometimes
    reach it through this, so a run whose figures go to a drawing process never
    imports matplotlib."""
    return importlib.import_module("digitlab.plots")


def frame(payload: bytes) -> bytes:
    """``payload`` preceded by its length (8 bytes, little-endian), to pass through a pipe."""
    return len(payload).to_bytes(8, "little") + payload


def unframe(data: bytes) -> list[bytes]:
    """The payloads of ``data``, each written by :func:`frame`."""
    payloads, at = [], 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at:at + 8], "little")
        payloads.append(data[at + 8:at + 8 + size])
        at += 8 + size
    return payloads


def _read_frame(fd: int) -> bytes | None:
    """One framed payload from ``fd``, or None when the other side closed first."""
    head = _read_exactly(fd, 8)
    if head is None:
        return None
    return _read_exactly(fd, int.from_bytes(head, "little"))


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Drawer:
    """A forked process that draws recipes into PNGs (see the module's docstring).

    Made by :func:`start_drawer`. :meth:`submit` sends recipes as soon as they are
    known, in one or more batches: the figures of the data alone while the run still
    imports and trains, those of the model while it writes its other files.
    :meth:`draw` sends the rest and collects the PNGs. Should the process fail or die,
    :meth:`draw` returns None and the caller draws itself.
    """

    def __init__(self, pid: int, requests: int, replies: int) -> None:
        self.pid, self._requests, self._replies = pid, requests, replies
        self._open = True
        self._submitted: list[Recipe] = []

    def submit(self, recipes: Sequence[Recipe], *, background: bool = False) -> None:
        """Start drawing those of ``recipes`` not sent before. ``background``: the run is
        still busy on one core, so the drawing process keeps to the other (one figure at
        a time); otherwise it draws on both."""
        if not self._open or self._requests < 0:
            return
        sent = {id(recipe) for recipe in self._submitted}
        batch = [recipe for recipe in recipes if id(recipe) not in sent]
        if not batch:
            return
        self._submitted += batch
        try:
            _write_all(self._requests, frame(pickle.dumps((background, batch), pickle.HIGHEST_PROTOCOL)))
        except OSError:
            self.close()  # draw() finds it closed and answers None

    def draw(self, recipes: Sequence[Recipe]) -> list[bytes] | None:
        """The PNG of each recipe, in order; None when the drawing process failed or was
        sent a recipe that is not among them."""
        self.submit(recipes)
        if self._open and self._requests >= 0:
            os.close(self._requests)  # no more: the process leaves when it has drawn these
            self._requests = -1
        wanted = {id(recipe) for recipe in recipes}
        if not self._open or any(id(recipe) not in wanted for recipe in self._submitted):
            self.close()
            return None
        try:
            pngs = [_read_frame(self._replies) for _ in self._submitted]
        except OSError:
            pngs = [None]
        finally:
            self.close()
        drawn = [png for png in pngs if png is not None]
        if len(drawn) != len(self._submitted):
            return None
        by_recipe = {id(recipe): png for recipe, png in zip(self._submitted, drawn, strict=True)}
        return [by_recipe[id(recipe)] for recipe in recipes]

    def close(self) -> None:
        """Let the process go (it leaves when its requests pipe closes) and reap it; one
        never asked for its drawings (the run failed first) is stopped at once, not waited for."""
        if not self._open:
            return
        self._open = False
        if self._requests >= 0:
            import signal

            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGTERM)
        for fd in (self._requests, self._replies):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._requests = self._replies = -1
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


PIPE_BYTES = 1 << 20  # a run's recipes are ~0.1 MB, its PNGs ~0.3 MB


def widen_pipe(fd: int) -> None:
    """Give the pipe written through ``fd`` room for PIPE_BYTES, so a run's recipes or
    PNGs pass without the writer waiting for the reader (Linux; elsewhere unchanged)."""
    with contextlib.suppress(OSError, AttributeError):
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def can_fork() -> bool:
    """Whether forking a helper is safe and worth it here: Linux (fork), two usable cores,
    and no other Python thread (a forked child could wait forever on a lock one held)."""
    from digitlab.engines import usable_cores

    return hasattr(os, "fork") and sys.platform.startswith("linux") and usable_cores() >= 2 \
        and threading.active_count() == 1


@contextlib.contextmanager
def start_drawer(enabled: bool = True) -> Iterator[Drawer | None]:
    """A :class:`Drawer` for the ``with`` block (None when disabled or not :func:`can_fork`);
    its process is reaped when the block ends, used or not."""
    if not enabled or not can_fork():
        yield None
        return
    requests_read, requests_write = os.pipe()
    replies_read, replies_write = os.pipe()
    for fd in (requests_write, replies_write):
        widen_pipe(fd)
    with warnings.catch_warnings():
        from digitlab.engines import FORK_WARNING

        warnings.filterwarnings("ignore", FORK_WARNING, DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the drawing process: it never returns (no atexit, no buffers flushed)
        code = 1
        try:
            os.close(requests_write)
            os.close(replies_read)
            _serve(requests_read, replies_write)
            code = 0
        finally:
            os._exit(code)
    os.close(requests_read)
    os.close(replies_write)
    drawer = Drawer(pid, requests_write, replies_read)
    try:
        yield drawer
    finally:
        drawer.close()


def _serve(requests: int, replies: int) -> None:
    """The drawing process: get ready while the run works, then draw each batch it sends
    until it closes the pipe."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle; it reaps us
    _warm_up()
    while (payload := _read_frame(requests)) is not None:
        background, recipes = pickle.loads(payload)  # our own parent's pickle, through our own pipe
        plots = plotting()
        pngs = (plots.png_of(recipe) for recipe in recipes) if background else plots.png_bytes_all(recipes)
        for png in pngs:
            _write_all(replies, frame(png))


def _warm_up() -> None:
    """Import what drawing needs and load the font, on this core while the run imports
    and loads on the other. Recipes hold only arrays and built-in types (their unpickling
    imports nothing more)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.font_manager import FontProperties, findfont, get_font

    plotting()
    get_font(findfont(FontProperties()))
