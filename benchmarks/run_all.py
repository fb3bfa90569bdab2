"""Run every benchmark in this folder, one after another, and print one table of their rows.

    python benchmarks/run_all.py                      # every bench_*.py, full runs (long)
    python benchmarks/run_all.py --quick              # each script's own quick run, where it has one
    python benchmarks/run_all.py --only softmax mlp   # bench_softmax.py and bench_mlp.py
    python benchmarks/run_all.py --json results.json  # the rows as JSON too

A script that declares ``--dask-local`` gets it on every run: it starts the
two-worker Dask cluster its Dask row needs on 127.0.0.1.

Each script runs with this Python in its own process; its output streams here
under a heading, and its ``RESULT {json}`` lines (see ``_results.py``) become
the table's rows. Exit code: 0 when every row met its target, 1 when some
missed, 2 when a script failed (a non-zero exit, no rows, or a malformed row).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _results import PREFIX  # benchmarks/ is sys.path[0] when run as a script

HERE = Path(__file__).resolve().parent
REQUIRED = ("name", "digitlab", "reference", "unit", "ratio", "target", "met")
# A script's own quick-run flag: ours, then pytorch/examples' name for it.
QUICK_FLAGS = ("--quick", "--dry-run")
# Flags passed to every script that declares them, quick run or not: a script that can
# start the Dask cluster its rows need (bench_sweep's Dask row) starts it, else that row
# would be missing from the table.
ALWAYS_FLAGS = ("--dask-local",)
COLUMNS = ("benchmark", "digitlab", "reference", "unit", "ratio", "target", "verdict", "load")

Row = dict[str, Any]


def parse_results(text: str, source: str = "output") -> list[Row]:
    """The rows of every ``RESULT {json}`` line in ``text``, in order; other lines are ignored.

    Raises ``ValueError`` naming ``source``, the line number and the line when
    a RESULT line is not a JSON object with the keys ``report`` writes.
    """
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.startswith(PREFIX):
            continue
        where = f"{source}, line {number}: malformed {PREFIX.strip()} line {line!r}"
        try:
            row = json.loads(line[len(PREFIX) :])
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: {error}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: not a JSON object")
        missing = [key for key in REQUIRED if key not in row]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        if not isinstance(row["met"], bool):
            raise ValueError(f"{where}: 'met' is {row['met']!r}, not true or false")
        rows.append(row)
    return rows


def figure(value: Any) -> str:
    """A figure for the table: thousands separated when large, four significant digits else."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def render_table(rows: list[Row]) -> str:
    """The rows as plain text columns, one line each under a header, numbers right-aligned."""
    cells = [
        [
            str(row["name"]),
            figure(row["digitlab"]),
            figure(row["reference"]),
            str(row["unit"]),
            figure(row["ratio"]),
            str(row["target"]),
            "met" if row["met"] else "MISSED",
            "-" if row.get("load_average") is None else f"{row['load_average']:.1f}",
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [list(COLUMNS), *cells]) for i in range(len(COLUMNS))]
    numeric = {1, 2, 4, 7}  # digitlab, reference, ratio, load

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if i in numeric else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(list(COLUMNS)), rule, *(line(c) for c in cells)])


def exit_code(rows: list[Row], failures: list[str]) -> int:
    """2 when a script failed, else 1 when a row missed its target, else 0."""
    if failures:
        return 2
    return 0 if all(row["met"] for row in rows) else 1


def select(directory: Path, only: list[str] | None) -> list[Path]:
    """The ``bench_*.py`` scripts in ``directory``, sorted; ``only`` picks some by name.

    A name may be given as ``softmax``, ``bench_softmax`` or ``bench_softmax.py``.
    """
    scripts = sorted(directory.glob("bench_*.py"))
    if not only:
        return scripts
    by_name = {s.stem.removeprefix("bench_"): s for s in scripts}
    wanted = [name.removesuffix(".py").removeprefix("bench_") for name in only]
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        raise ValueError(
            f"no benchmark {', '.join(unknown)} in {directory} (there are: {', '.join(by_name)})"
        )
    return [by_name[name] for name in dict.fromkeys(wanted)]


def quick_flag(script: Path) -> str | None:
    """The script's own quick-run flag, as its argparse declares it, or None when it has none."""
    source = script.read_text(encoding="utf-8")
    return next((flag for flag in QUICK_FLAGS if f'"{flag}"' in source), None)


def always_flags(script: Path) -> list[str]:
    """The flags of ALWAYS_FLAGS the script's argparse declares, to pass it on every run."""
    source = script.read_text(encoding="utf-8")
    return [flag for flag in ALWAYS_FLAGS if f'"{flag}"' in source]


def collect(script: str, returncode: int, output: str) -> tuple[list[Row], str | None]:
    """A finished script's rows (each naming the script) and why it failed, or None.

    A script fails when it exits non-zero (the rows it printed before are
    kept), prints a malformed RESULT line, or prints none.
    """
    try:
        rows = [{**row, "script": script} for row in parse_results(output, source=script)]
    except ValueError as error:
        return [], str(error)
    if returncode != 0:
        return rows, f"{script} exited with code {returncode}"
    if not rows:
        return rows, f"{script} printed no {PREFIX.strip()} lines"
    return rows, None


def run_script(command: list[str], heading: str) -> tuple[int, str]:
    """Run ``command``, streaming its output (standard error merged) under ``heading``."""
    print(f"\n=== {heading}", flush=True)
    lines = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    return process.returncode, "".join(lines)


def write_json(path: Path, rows: list[Row]) -> None:
    """The rows as a JSON list, written to a temporary name and renamed into place.

    A figure never measured (NaN, which strict JSON lacks) is written as null.
    """
    strict = [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in rows
    ]
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(strict, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    partial.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="run only these benchmarks, e.g. softmax mlp (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help=f"pass each script its own quick flag ({' or '.join(QUICK_FLAGS)}) "
                             "where it has one")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the rows here")
    parser.add_argument("--dir", type=Path, default=HERE,
                        help="the folder of bench_*.py scripts (default: this script's folder)")
    args = parser.parse_args(argv)
    try:
        scripts = select(args.dir, args.only)
    except ValueError as error:
        parser.error(str(error))
    if not scripts:
        parser.error(f"no bench_*.py scripts in {args.dir}")

    rows: list[Row] = []
    failures: list[str] = []
    for script in scripts:
        flag = quick_flag(script) if args.quick else None
        command = [sys.executable, "-u", str(script), *([flag] if flag else []), *always_flags(script)]
        start = time.perf_counter()
        returncode, output = run_script(command, " ".join([script.name, *command[3:]]))
        print(f"=== {script.name}: exit {returncode} after {time.perf_counter() - start:.0f} s")
        found, failure = collect(script.name, returncode, output)
        rows.extend(found)
        if failure:
            failures.append(failure)

    print()
    if rows:
        print(render_table(rows))
    missed = sum(not row["met"] for row in rows)
    print(f"\n{len(rows)} rows: {len(rows) - missed} met, {missed} MISSED")
    for failure in failures:
        print(f"FAILED: {failure}")
    if args.json:
        write_json(args.json, rows)
        print(f"rows written to {args.json}")
    return exit_code(rows, failures)


if __name__ == "__main__":
    sys.exit(main())
