"""Import a heavy optional module only when it is first used.

PyTorch takes two to three seconds to import. Only the CNN needs it, but the
command line lists every model's settings at start-up, so the CNN class must
exist without torch being imported: ``digitlab predict`` with a NumPy model
should not wait for it.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_import(name: str) -> ModuleType:
    """The module ``name``, executed on its first attribute access (ImportError if absent).

    This is the recipe of the ``importlib.util.LazyLoader`` documentation. A module
    already imported is returned as it is.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
