"""One machine-readable line per benchmark row, for ``run_all.py`` to gather into a table.

Each benchmark prints its own human-readable figures, then calls
:func:`report` once per row: ``RESULT {json}`` on standard output.
"""

from __future__ import annotations

import json
import os

PREFIX = "RESULT "


def report(
    name: str,
    *,
    digitlab: float,
    reference: float,
    unit: str,
    ratio: float,
    target: str,
    met: bool,
    note: str = "",
) -> None:
    """Print one row: both figures in ``unit``, their ratio as the target reads it, and the verdict.

    ``ratio`` is whichever quotient the target is stated in (a time ratio
    digitlab / reference, or a speed-up reference / digitlab), so the table
    prints it as the benchmark computed it.
    """
    row = {
        "name": name, "digitlab": digitlab, "reference": reference, "unit": unit,
        "ratio": ratio, "target": target, "met": bool(met), "note": note,
        "load_average": round(os.getloadavg()[0], 1),
    }
    print(PREFIX + json.dumps(row), flush=True)
