"""Import a heavy optional module only when it is first used.

PyTorch takes two to three seconds to import. Only the CNN needs it, but the
command line lists every model's settings at start-up, so the CNN class must
exist without torch being imported: ``digitlab predict`` with a NumPy model
should not wait for it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any


class _LazyModule(ModuleType):
    """Stands in for a module until an attribute is read, then imports it for real.

    It is deliberately *not* put in ``sys.modules`` (as the ``importlib.util.LazyLoader``
    recipe does): libraries look there to ask "is torch in use?" (matplotlib's and
    SciPy's array checks read ``sys.modules["torch"].Tensor``), and a lazy module found
    there answers by importing torch - 1.2 s in every ``digitlab train`` that drew a figure.
    """

    _before: Callable[[], None] | None = None

    def __getattr__(self, attribute: str) -> Any:
        if self._before is not None and self.__name__ not in sys.modules:
            self._before()  # e.g. environment variables the module reads as it loads
        module = importlib.import_module(self.__name__)
        value = getattr(module, attribute)
        setattr(self, attribute, value)  # found directly from now on
        return value


def lazy_import(name: str, before: Callable[[], None] | None = None) -> ModuleType:
    """The module ``name``, imported on its first attribute access (ImportError at once if absent).

    ``before`` runs just before that import (not when something else imported the
    module first). A module already imported is returned as it is.
    """
    if name in sys.modules:
        return sys.modules[name]
    if importlib.util.find_spec(name) is None:
        raise ImportError(f"No module named {name!r}", name=name)
    module = _LazyModule(name)
    module._before = before
    return module
