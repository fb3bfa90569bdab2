"""Settings x seeds: many training runs, on this machine's cores or a Dask cluster.

A sweep is a list of :class:`~digitlab.run.RunConfig`: a grid of setting values
(and/or random draws) crossed with seeds. Each run is :func:`run_one`, a
module-level function of plain data, handed to an engine
(:mod:`digitlab.engines`): the same call in this process, in a local worker
process or on a cluster worker, so the same settings and seed give the same
numbers everywhere. A worker loads the data itself, by name or path (nothing
bigger than a settings dict travels), and writes its run folder under
``out/runs/<run id>/`` with :func:`digitlab.run.train`'s own atomic writes.

The driver writes ``results.csv`` and ``results.json`` again, atomically, as
each run ends: an interrupted sweep keeps every finished run, and a sweep
started again with the same ``out`` skips the runs already ``ok`` there (a run
is known by its id, a hash of its data, model, settings and seed) and retries
the failed ones. The best run is chosen on its validation accuracy, never on
test.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import itertools
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.atomic import atomic_file, check_folder_destination, write_json
from digitlab.engines import allocator_problem
from digitlab.errors import DataError, DigitlabError, SettingsError
from digitlab.io import json_settings
from digitlab.run import RunConfig

# Options of the run (not of the model) a sweep may vary; the others (data, model, seed
# and the files' own options) are the sweep's, or are varied by --seeds.
RUN_OPTIONS = ("task", "image_size", "deskew", "normalise", "test_fraction", "validation_fraction")
# Model settings the run sets itself: random_state follows the seed, and the run carves
# the validation split (a model's own validation_fraction would be a second one).
RUN_SET = ("random_state", "validation_fraction")

Parse = Callable[[str, str], object]  # (setting name, text) -> the setting's value

RESULT_COLUMNS = ("train_accuracy", "validation_accuracy", "test_accuracy", "balanced_accuracy",
                  "validation_balanced_accuracy", "seconds", "fit_seconds", "where", "error")


# ---------------------------------------------------------------- what to run


def sweep_settings(model: str) -> dict[str, object]:
    """Every name a sweep of ``model`` may vary, with its default (the CLI parses a value
    with the type the ``train`` option of that name takes)."""
    from digitlab.models import MODELS

    if model not in MODELS:
        raise SettingsError(f"unknown model {model!r}: choose from {', '.join(MODELS)}")
    defaults = {f.name: f.default for f in fields(RunConfig) if f.name in RUN_OPTIONS}
    for param in inspect.signature(MODELS[model].__init__).parameters.values():
        if param.kind is inspect.Parameter.KEYWORD_ONLY and param.name not in RUN_SET:
            defaults[param.name] = param.default
    return defaults


def check_setting_name(model: str, name: str) -> None:
    """SettingsError unless a sweep of ``model`` can vary ``name``."""
    if name in ("seed", "random_state"):
        raise SettingsError(f"{name} is varied by --seeds, not by a setting")
    if name not in sweep_settings(model):
        raise SettingsError(f"model {model!r} has no setting {name!r} to sweep")


def _split_assignment(option: str, text: str) -> tuple[str, str]:
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name or not values.strip():
        raise SettingsError(f"{option} {text!r}: expected NAME=VALUES")
    return name, values.strip()


def parse_grid(texts: Iterable[str], model: str, parse: Parse) -> dict[str, list[object]]:
    """``["lr=0.01,0.1", "hidden=64;128,64"]`` -> ``{"lr": [0.01, 0.1], "hidden": [(64,), (128, 64)]}``.

    Values are separated by commas, or by semicolons when there is one (so that a
    value may hold commas itself: several hidden layers); ``parse`` types each.
    """
    grid: dict[str, list[object]] = {}
    for text in texts:
        name, values = _split_assignment("--grid", text)
        check_setting_name(model, name)
        if name in grid:
            raise SettingsError(f"--grid {name} is given twice")
        parts = [part.strip() for part in values.split(";" if ";" in values else ",")]
        if not all(parts):
            raise SettingsError(f"--grid {text!r}: an empty value")
        grid[name] = [parse(name, part) for part in parts]
    return grid


@dataclass(frozen=True)
class Draw:
    """How one setting of a random search is drawn: ``log``, ``uniform``, ``int`` or ``choice``."""

    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[object, ...] = ()

    def sample(self, rng: np.random.Generator) -> object:
        if self.kind == "choice":
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.kind == "int":
            return int(rng.integers(int(self.low), int(self.high) + 1))
        if self.kind == "log":
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return float(f"{value:.4g}")  # four figures: readable in tables, ids and file names


def parse_random(texts: Iterable[str], model: str, parse: Parse) -> dict[str, Draw]:
    """``["lr=log:1e-4:1", "hidden=choice:64,256", "epochs=int:2:8", "dropout=uniform:0:0.5"]``."""
    draws: dict[str, Draw] = {}
    for text in texts:
        name, spec = _split_assignment("--random", text)
        check_setting_name(model, name)
        if name in draws:
            raise SettingsError(f"--random {name} is given twice")
        kind, _, rest = spec.partition(":")
        if kind == "choice":
            parts = [part.strip() for part in rest.split(";" if ";" in rest else ",")]
            if not all(parts):
                raise SettingsError(f"--random {text!r}: an empty choice")
            draws[name] = Draw("choice", choices=tuple(parse(name, part) for part in parts))
            continue
        bounds = rest.split(":")
        if kind not in ("log", "uniform", "int") or len(bounds) != 2:
            raise SettingsError(f"--random {text!r}: expected log:LOW:HIGH, uniform:LOW:HIGH, "
                                "int:LOW:HIGH or choice:A,B,...")
        try:
            low, high = ((int(b) for b in bounds) if kind == "int" else (float(b) for b in bounds))
        except ValueError:
            raise SettingsError(f"--random {text!r}: bounds must be {'integers' if kind == 'int' else 'numbers'}") from None
        if not (math.isfinite(low) and math.isfinite(high) and low <= high) or (kind == "log" and low <= 0):
            raise SettingsError(f"--random {text!r}: needs LOW <= HIGH{' and LOW > 0' * (kind == 'log')}")
        draws[name] = Draw(kind, low, high)
    return draws


def sweep_points(grid: Mapping[str, list[object]], draws: Mapping[str, Draw],
                 trials: int, seed: int) -> list[dict[str, object]]:
    """The settings of each run but its seed: every grid combination, crossed with
    ``trials`` random draws (seeded by ``seed``) when there are draws."""
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    if not draws:
        return combos
    if trials < 1:
        raise SettingsError(f"--trials must be at least 1, got {trials}")
    rng = np.random.default_rng(seed)
    drawn = [{name: draw.sample(rng) for name, draw in draws.items()} for _ in range(trials)]
    return [{**combo, **sample} for combo in combos for sample in drawn]


def plan_sweep(base: RunConfig, points: list[dict[str, object]], seeds: Iterable[int]) -> list[RunConfig]:
    """One RunConfig per point and seed; a point's run options set the run, the rest the model."""
    seeds = list(seeds)
    if not seeds:
        raise SettingsError("--seeds needs at least one seed")
    configs = []
    for point in points:
        options = {name: value for name, value in point.items() if name in RUN_OPTIONS}
        settings = {name: value for name, value in point.items() if name not in RUN_OPTIONS}
        for seed in seeds:
            configs.append(replace(base, **options, seed=seed,  # type: ignore[arg-type]
                                   settings={**base.settings, **settings}))
    return configs


def run_id(config: RunConfig) -> str:
    """A run's name: a hash of everything that makes its numbers (data, model, settings, seed)."""
    described = {**asdict(config), "settings": json_settings(config.settings)}
    text = json.dumps(described, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def swept_names(configs: list[RunConfig], base: RunConfig) -> list[str]:
    """The run options and model settings some run sets otherwise than ``base``: what
    the sweep varies (every run's table row shows its value of each)."""
    names = [name for name in RUN_OPTIONS if any(getattr(c, name) != getattr(base, name) for c in configs)]
    missing = object()
    for config in configs:
        names += [name for name, value in config.settings.items()
                  if name not in names and base.settings.get(name, missing) != value]
    return names


def swept_values(config: RunConfig, names: list[str]) -> dict[str, Any]:
    """This run's value of each swept name, as JSON."""
    values = {name: getattr(config, name) if name in RUN_OPTIONS else config.settings.get(name)
              for name in names}
    return json_settings(values)


# ---------------------------------------------------------------- one run


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_error(exc: BaseException) -> str:
    """An exception as one line: digitlab's own errors as they read, others with their type."""
    text = str(exc) if isinstance(exc, DigitlabError) else f"{type(exc).__name__}: {exc}"
    return _one_line(text)


_SETTLED = False  # whether settle_worker() ran in this process


def settle_worker() -> None:
    """Once in a worker process, before its first run: import what every run uses, then
    exempt the objects alive from garbage collection (``gc.freeze``, after a collection,
    so no garbage is kept), as the command line does for itself.

    scikit-learn, SciPy, matplotlib (and a Dask worker's own modules) leave hundreds of
    thousands of long-lived objects, and each full collection that a run's many small
    objects trigger walks them all. Measured on 24 MLP runs, two Dask workers (2-core
    AMD EPYC): median run 1.445 s, 1.263 s settled. Only in a worker process: a sweep
    run in the caller's own process (one local worker) leaves its garbage collector alone.
    """
    global _SETTLED
    if _SETTLED:
        return
    _SETTLED = True
    import gc

    from digitlab.run import start_heavy_imports

    start_heavy_imports()()
    import digitlab.plots  # noqa: F401  (matplotlib: every run with a folder draws)

    gc.collect()
    gc.freeze()


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one run of a sweep and return its row of the results table.

    ``spec``: ``run_id``, ``config`` (a RunConfig as a dict), ``out`` (its run
    folder), ``settings`` (what it varies, for the table) and ``settle`` (whether
    this is a worker process of its own: :func:`settle_worker`). Module-level and
    plain data in and out, so any engine can run it anywhere. A run that fails
    returns its row with ``status`` "failed" and the one-line ``error``; only an
    interrupt stops it.
    """
    from digitlab.run import train

    if spec.get("settle"):
        settle_worker()
    config = RunConfig(**spec["config"])
    row: dict[str, Any] = {
        "run_id": spec["run_id"], "status": "failed", "data": config.data, "model": config.model,
        "task": config.task, "seed": config.seed, "settings": spec.get("settings", {}),
        **dict.fromkeys(RESULT_COLUMNS), "warnings": [],
    }
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slow = allocator_problem()
        if slow is not None:
            warnings.warn(slow, RuntimeWarning, stacklevel=1)
        try:
            # keep_existing: the same run may still be finishing on a cluster worker from an
            # interrupted sweep; the first folder written stays whole (same settings and
            # seed, same numbers) instead of the two writers' files mixing.
            result = train(config, spec["out"], keep_existing=True)
        except Exception as exc:  # one failed run is a row, not the end of the sweep
            row["error"] = describe_error(exc)
        else:
            measured = result.metrics
            if measured.get("interrupted"):  # Ctrl-C reached the model: a partial fit is no result
                row.update(status="interrupted", error="interrupted during training")
                return _finish(row, caught, started)
            validation = measured.get("validation") or {}
            row.update(status="ok", train_accuracy=measured["train"]["accuracy"],
                       validation_accuracy=validation.get("accuracy"),
                       test_accuracy=measured["test"]["accuracy"],
                       balanced_accuracy=measured["test"]["balanced_accuracy"],
                       validation_balanced_accuracy=validation.get("balanced_accuracy"),
                       fit_seconds=result.seconds)
    return _finish(row, caught, started)


def _finish(row: dict[str, Any], caught: list[warnings.WarningMessage], started: float) -> dict[str, Any]:
    row["warnings"] = sorted({_one_line(str(w.message)) for w in caught})
    row["seconds"] = time.perf_counter() - started
    row["where"] = f"{socket.gethostname()}:{os.getpid()}"
    return row


# ---------------------------------------------------------------- the sweep


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]  # every run in `out`'s results, the plan's first, in its order
    best: dict[str, Any] | None  # the ok run of highest validation accuracy
    skipped: int  # runs already ok in `out`, not run again
    out: Path


def best_run(rows: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The ok run with the highest validation accuracy (then validation balanced accuracy;
    the first in order on a tie). None when no run has a validation split: the test split
    chooses nothing."""
    scored = [row for row in rows if row.get("status") == "ok" and row.get("validation_accuracy") is not None]
    if not scored:
        return None
    return max(scored, key=lambda row: (row["validation_accuracy"], row.get("validation_balanced_accuracy") or 0.0))


def read_results(out: Path) -> dict[str, dict[str, Any]]:
    """The rows of an earlier sweep into ``out`` by run id (none when it has no results)."""
    path = out / "results.json"
    if not path.is_file():
        return {}
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
        return {str(row["run_id"]): row for row in rows}
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(path, f"not the results of a digitlab sweep ({describe_error(exc)}); "
                        "choose another --out") from None


def write_results(out: Path, rows: list[dict[str, Any]]) -> None:
    """``results.json`` (every field) and ``results.csv`` (one column a setting), atomically."""
    best = best_run(rows)
    write_json(out / "results.json", {"best": best["run_id"] if best else None, "rows": rows})
    names = list(dict.fromkeys(name for row in rows for name in row.get("settings", {})))
    header = ["run_id", "status", "data", "model", "task", "seed", *names, *RESULT_COLUMNS]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        settings = row.get("settings", {})
        writer.writerow([*(row.get(key) for key in header[:6]),
                         *(json.dumps(settings[name]) if name in settings else "" for name in names),
                         *("" if row.get(key) is None else row[key] for key in RESULT_COLUMNS)])
    with atomic_file(out / "results.csv") as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")


OnRun = Callable[[dict[str, Any], dict[str, Any] | None], None]


def run_sweep(
    configs: list[RunConfig],
    out: str | os.PathLike[str],
    engine: Any,
    *,
    base: RunConfig | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_run: OnRun | None = None,
) -> SweepResult:
    """Run ``configs`` on ``engine`` (see :mod:`digitlab.engines`), writing the results
    under ``out`` as each run ends; ``base`` is the config the runs vary (their table
    shows what differs from it). ``on_start(to_run, skipped)`` is called once before
    the first run, ``on_run(row, best so far)`` after each. The caller closes ``engine``.
    """
    out = Path(out)
    check_folder_destination(out, merge=True)  # before any run: an unwritable --out is one line
    base = base or (configs[0] if configs else RunConfig())
    previous = read_results(out)
    planned = {run_id(config): config for config in configs}  # a repeated run runs once
    rows = dict(previous)
    todo = [(rid, config) for rid, config in planned.items() if previous.get(rid, {}).get("status") != "ok"]

    def ordered() -> list[dict[str, Any]]:
        return [rows[rid] for rid in planned if rid in rows] + [
            row for rid, row in rows.items() if rid not in planned]

    write_results(out, ordered())
    if on_start is not None:
        on_start(len(todo), len(planned) - len(todo))
    names = swept_names(configs, base)
    futures: dict[Any, dict[str, Any]] = {}
    for rid, config in todo:
        spec: dict[str, Any] = {"run_id": rid, "config": asdict(config), "out": str(out / "runs" / rid),
                "settings": swept_values(config, names),
                "settle": bool(getattr(engine, "separate_processes", False))}
        futures[engine.submit(run_one, spec, key=f"digitlab-run-{rid}")] = spec
    for future in engine.as_completed(list(futures)):
        spec = futures[future]
        try:
            row = future.result()
        except Exception as exc:  # the engine lost the run (a worker died): a failed row
            config = planned[spec["run_id"]]
            row = {"run_id": spec["run_id"], "status": "failed", "data": config.data,
                   "model": config.model, "task": config.task, "seed": config.seed,
                   "settings": spec["settings"], **dict.fromkeys(RESULT_COLUMNS),
                   "where": getattr(engine, "where", None), "error": describe_error(exc), "warnings": []}
        rows[spec["run_id"]] = row
        write_results(out, ordered())
        if row["status"] == "interrupted":  # Ctrl-C reached a run: stop, keeping what finished
            raise KeyboardInterrupt
        if on_run is not None:
            on_run(row, best_run(rows.values()))
    final = ordered()
    return SweepResult(final, best_run(final), len(planned) - len(todo), out)


# ---------------------------------------------------------------- what it found


def setting_summary(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """For each swept setting, each of its values: how many ok runs, and the mean and
    standard deviation (over the seeds and the other settings) of their validation and
    test accuracy."""
    ok = [row for row in rows if row.get("status") == "ok"]
    names = list(dict.fromkeys(name for row in ok for name in row.get("settings", {})))
    summary: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in ok:
            if name in row["settings"]:
                groups.setdefault(json.dumps(row["settings"][name]), []).append(row)
        entries = []
        for key, members in groups.items():
            entry: dict[str, Any] = {"value": json.loads(key), "runs": len(members)}
            for split in ("validation", "test"):
                values = [r[f"{split}_accuracy"] for r in members if r.get(f"{split}_accuracy") is not None]
                entry[f"{split}_mean"] = float(np.mean(values)) if values else None
                entry[f"{split}_std"] = float(np.std(values)) if values else None
            entries.append(entry)
        summary[name] = sorted(entries, key=_value_order)
    return summary


def _value_order(entry: dict[str, Any]) -> tuple[int, float, str]:
    value = entry["value"]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, json.dumps(value))


def write_sweep_report(result: SweepResult, *, title: str) -> Path:
    """``report.html`` in the sweep's folder: accuracy against each setting, the runs'
    learning curves overlaid, every run's row and a link to the best run's folder."""
    from digitlab import plots
    from digitlab.report import write_sweep_page

    summary = setting_summary(result.rows)
    figures = [(f"setting-{name}", f"Accuracy against {name}: mean and standard deviation over "
                "the seeds and the other settings", plots.setting_accuracy(name, entries))
               for name, entries in summary.items()]
    curves: dict[str, dict[str, list[float]]] = {}
    for row in result.rows:
        metrics_file = result.out / "runs" / row["run_id"] / "metrics.json"
        if row.get("status") == "ok" and metrics_file.is_file():
            history = json.loads(metrics_file.read_text(encoding="utf-8")).get("history") or {}
            if history:
                curves[row["run_id"]] = history
    if curves:
        figures.append(("learning-curves", "Learning curves of every run (validation, dashed, "
                        "where the run has one); the best run drawn thick",
                        plots.overlaid_learning_curves(curves, best=result.best["run_id"] if result.best else None)))
    return write_sweep_page(result.out, title=title, rows=result.rows, best=result.best,
                            summary=summary, figures=figures)
