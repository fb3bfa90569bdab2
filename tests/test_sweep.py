"""digitlab sweep: settings x seeds on local processes, results per run, resume, report."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from digitlab import sweep as sweep_module
from digitlab.cli import _sweep_parse, main
from digitlab.engines import LocalEngine
from digitlab.errors import SettingsError
from digitlab.run import RunConfig
from digitlab.sweep import (
    best_run,
    parse_grid,
    parse_random,
    plan_sweep,
    read_results,
    run_id,
    run_one,
    run_sweep,
    sweep_points,
    swept_names,
    swept_values,
    write_sweep_report,
)

# A tiny MLP: a run trains in a fraction of a second; writing its folder costs the rest.
BASE = RunConfig(model="mlp", settings={"hidden": (8,), "epochs": 2})
PARSE = _sweep_parse("mlp")


def _plan(grid: dict[str, list[object]], seeds: list[int]) -> list[RunConfig]:
    return plan_sweep(BASE, sweep_points(grid, {}, 1, 0), seeds)


def test_grid_values_take_the_train_options_types() -> None:
    grid = parse_grid(["lr=0.01,1", "hidden=64;128,64", "early-stopping=yes,no",
                       "task=all,is-2", "validation_fraction=0.2"], "mlp", PARSE)
    assert grid == {"lr": [0.01, 1.0], "hidden": [(64,), (128, 64)], "early_stopping": [True, False],
                    "task": ["all", "is-2"], "validation_fraction": [0.2]}
    assert all(isinstance(v, float) for v in grid["lr"])
    configs = plan_sweep(BASE, sweep_points(grid, {}, 1, 0), [0, 1])
    assert len(configs) == 2 * 2 * 2 * 2 * 1 * 2
    assert {c.task for c in configs} == {"all", "is-2"}
    assert configs[0].validation_fraction == 0.2
    assert configs[0].settings == {"hidden": (64,), "epochs": 2, "lr": 0.01, "early_stopping": True}
    assert len({run_id(c) for c in configs}) == len(configs)


@pytest.mark.parametrize(("texts", "message"), [
    (["lr"], "expected NAME=VALUES"),
    (["lr="], "expected NAME=VALUES"),
    (["lr=0.1,,1"], "an empty value"),
    (["colour=red"], "has no setting 'colour'"),
    (["seed=1,2"], "--seeds"),
    (["lr=fast"], "lr='fast'"),
    (["lr=0.1", "lr=1"], "given twice"),
])
def test_bad_grids_are_refused(texts: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_grid(texts, "mlp", PARSE)


def test_every_row_shows_each_swept_value_even_the_base_one() -> None:
    configs = _plan(parse_grid(["epochs=2,3", "task=all,is-2"], "mlp", PARSE), [0])
    names = swept_names(configs, BASE)
    assert names == ["task", "epochs"]
    assert swept_values(configs[0], names) == {"task": "all", "epochs": 2}  # both BASE's own


def test_random_search_is_seeded_and_within_its_bounds() -> None:
    draws = parse_random(["lr=log:1e-4:1", "dropout=uniform:0:0.5", "epochs=int:2:4",
                          "activation=choice:relu,tanh"], "mlp", PARSE)
    points = sweep_points({"alpha": [0.0, 0.1]}, draws, 5, seed=3)
    assert len(points) == 10
    assert points == sweep_points({"alpha": [0.0, 0.1]}, draws, 5, seed=3)
    assert points != sweep_points({"alpha": [0.0, 0.1]}, draws, 5, seed=4)
    for point in points:
        assert 1e-4 <= point["lr"] <= 1
        assert 0 <= point["dropout"] <= 0.5
        assert point["epochs"] in (2, 3, 4)
        assert isinstance(point["epochs"], int)
        assert point["activation"] in ("relu", "tanh")
    for bad in (["lr=log:0:1"], ["lr=normal:0:1"], ["lr=uniform:1:0"], ["epochs=int:a:b"], ["lr=uniform:1"]):
        with pytest.raises(SettingsError, match="--random"):
            parse_random(bad, "mlp", PARSE)


def test_best_is_chosen_on_validation_never_on_test() -> None:
    rows = [
        {"run_id": "a", "status": "ok", "validation_accuracy": 0.80, "test_accuracy": 0.95},
        {"run_id": "b", "status": "ok", "validation_accuracy": 0.90, "test_accuracy": 0.70},
        {"run_id": "c", "status": "failed", "validation_accuracy": None, "test_accuracy": None},
    ]
    assert best_run(rows)["run_id"] == "b"
    assert best_run([{**rows[0], "validation_accuracy": None}]) is None  # no validation: none chosen


def test_results_are_written_per_run_failures_recorded_and_resumed(tmp_path) -> None:
    # activation "bogus" passes the grid's parsing (a text setting) and fails in the run
    configs = _plan({"lr": [0.01, 0.1], "activation": ["relu", "bogus"]}, [0])
    out = tmp_path / "sweep"
    seen: list[int] = []

    def on_run(row: dict, best: dict | None) -> None:
        seen.append(len(json.loads((out / "results.json").read_text())["rows"]))

    engine = LocalEngine(1)
    result = run_sweep(configs, out, engine, base=BASE, on_run=on_run)
    assert seen == [1, 2, 3, 4]  # each run's row is on disk by the time it is reported
    rows = {row["run_id"]: row for row in result.rows}
    statuses = [rows[run_id(c)]["status"] for c in configs]
    assert statuses == ["ok", "failed", "ok", "failed"]
    failed = rows[run_id(configs[1])]
    assert failed["error"].startswith("activation must be one of")
    assert "\n" not in failed["error"]
    ok = rows[run_id(configs[0])]
    assert ok["settings"] == {"lr": 0.01, "activation": "relu"}
    assert 0.5 < ok["validation_accuracy"] <= 1
    assert 0.5 < ok["test_accuracy"] <= 1
    assert (out / "runs" / ok["run_id"] / "model.safetensors").is_file()
    with (out / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["status"] for r in table] == statuses
    assert table[0]["lr"] == "0.01"

    # again: the ok runs are skipped, the failed ones retried
    counts: list[tuple[int, int]] = []
    again = run_sweep(configs, out, engine, base=BASE, on_start=lambda n, s: counts.append((n, s)))
    assert counts == [(2, 2)]
    assert {r["run_id"]: r["where"] for r in again.rows if r["status"] == "ok"} == {
        r["run_id"]: r["where"] for r in result.rows if r["status"] == "ok"}

    report = write_sweep_report(again, title="test sweep")
    page = report.read_text()
    assert "id='fig-setting-lr'" in page
    assert "id='fig-learning-curves'" in page
    assert f"runs/{again.best['run_id']}/" in page
    assert (out / "figures" / "setting-activation.png").is_file()


@pytest.mark.parametrize("workers", [1, 2])
def test_an_interrupted_sweep_keeps_what_finished(workers, tmp_path) -> None:
    configs = _plan({"lr": [0.01, 0.1, 1.0]}, [0])
    out = tmp_path / "sweep"

    def interrupt(row: dict, best: dict | None) -> None:
        raise KeyboardInterrupt

    engine = LocalEngine(workers)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(configs, out, engine, base=BASE, on_run=interrupt)
    finally:
        engine.close()  # as the CLI does: the runs still going are stopped
    kept = read_results(out)
    assert [row["status"] for row in kept.values()] == ["ok"]
    counts: list[tuple[int, int]] = []
    run_sweep(configs, out, LocalEngine(1), base=BASE, on_start=lambda n, s: counts.append((n, s)))
    assert counts == [(2, 1)]


def test_a_run_folder_written_by_an_earlier_writer_of_the_run_stays_whole(tmp_path) -> None:
    # A run still finishing on a cluster worker after Ctrl-C, and the resumed sweep's new run
    # of it, both write runs/<id>: the folder there first stays as it is, untouched.
    config = _plan({"lr": [0.1]}, [0])[0]
    spec = {"run_id": run_id(config), "config": asdict(config),
            "out": str(tmp_path / "runs" / run_id(config)), "settings": {"lr": 0.1}}
    first = run_one(spec)
    folder = tmp_path / "runs" / run_id(config)
    written = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    second = run_one(spec)
    assert first["status"] == second["status"] == "ok"
    assert second["test_accuracy"] == first["test_accuracy"]  # same settings and seed
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == written
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run_id(config)]  # no temporaries


def test_a_worker_with_a_slow_allocator_says_so_in_its_row(tmp_path, monkeypatch) -> None:
    import digitlab.run
    from digitlab.engines import allocator_problem

    def no_training(config, out, **options):
        raise SettingsError("not trained here")

    monkeypatch.setattr(digitlab.run, "train", no_training)  # only the row's warnings matter
    config = _plan({"lr": [0.1]}, [0])[0]
    spec = {"run_id": run_id(config), "config": asdict(config), "out": str(tmp_path / "run")}
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert allocator_problem() is None
    assert run_one(spec)["warnings"] == []
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # what a Dask nanny sets by default
    row = run_one(spec)
    assert row["error"] == "not trained here"
    assert row["warnings"] == [allocator_problem()]
    assert "MALLOC_TRIM_THRESHOLD_=65536" in row["warnings"][0]


def test_one_process_and_two_processes_give_the_same_rows(tmp_path) -> None:
    configs = _plan({"lr": [0.01, 0.1]}, [0, 1])

    def rows(workers: int) -> list[dict]:
        engine = LocalEngine(workers)
        try:
            result = run_sweep(configs, tmp_path / f"w{workers}", engine, base=BASE)
        finally:
            engine.close()
        return [{k: v for k, v in row.items() if k not in ("seconds", "fit_seconds", "where")}
                for row in result.rows]

    one, two = rows(1), rows(2)
    assert all(row["status"] == "ok" for row in one)
    assert one == two


class _RecordingEngine:
    """Runs each run here, at once, and keeps the specs it was given."""

    def __init__(self, separate_processes: bool) -> None:
        self.separate_processes = separate_processes
        self.specs: list[dict] = []

    def submit(self, fn, arg, *, key):
        self.specs.append(arg)
        return LocalEngine(1).submit(fn, {**arg, "settle": False}, key=key)  # this process: no freeze

    def as_completed(self, futures):
        yield from futures


@pytest.mark.parametrize("separate", [True, False])
def test_only_runs_in_worker_processes_settle_them(tmp_path, separate) -> None:
    engine = _RecordingEngine(separate)
    run_sweep(_plan({"lr": [0.01]}, [0]), tmp_path / "out", engine, base=BASE)
    assert [spec["settle"] for spec in engine.specs] == [separate]
    two = LocalEngine(2)
    try:
        assert (LocalEngine(1).separate_processes, two.separate_processes) == (False, True)
    finally:
        two.close()


def test_a_sweep_in_this_process_leaves_its_garbage_collector_alone(tmp_path) -> None:
    import gc

    frozen = gc.get_freeze_count()
    result = run_sweep(_plan({"lr": [0.01]}, [0]), tmp_path / "out", LocalEngine(1), base=BASE)
    assert result.rows[0]["status"] == "ok"
    assert gc.get_freeze_count() == frozen


def test_a_worker_settles_once_before_its_first_run() -> None:
    """In a fresh process: the run's modules imported, then every live object frozen
    (exempt from collection), once; garbage made before is collected, not frozen."""
    code = (
        "import gc, sys, weakref\n"
        "from digitlab import sweep\n"
        "gc.disable()\n"  # only settle_worker's own collection may find the cycle
        "class Cycle: pass\n"
        "c = Cycle(); c.me = c; ref = weakref.ref(c); del c\n"  # garbage: collected, never frozen
        "sweep.settle_worker(); first = gc.get_freeze_count()\n"
        "sweep.settle_worker()\n"
        "print(first, gc.get_freeze_count() == first, int(ref() is not None),\n"
        "      all(m in sys.modules for m in ('digitlab.models', 'digitlab.inspection', 'matplotlib.figure')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(Path(sweep_module.__file__).parents[1])})
    first, once, garbage_kept, imported = done.stdout.split()
    assert int(first) > 50_000  # scikit-learn, SciPy and matplotlib's objects
    assert (once, garbage_kept, imported) == ("True", "0", "True")


def test_each_local_worker_keeps_to_its_share_of_the_cores() -> None:
    """Two workers on N cores each use N // 2: BLAS threads, and no forked drawing
    process (a one-core worker that forked one made a 24-run sweep 18% slower)."""
    from digitlab.engines import usable_cores

    cores = usable_cores()
    if cores < 2:
        pytest.skip("needs two cores")
    engine = LocalEngine(2)
    try:
        seen = engine.submit(lambda _: (
            __import__("digitlab.engines").engines.usable_cores(),
            __import__("digitlab.drawing").drawing.can_fork(),
            __import__("threadpoolctl").threadpool_info()[0]["num_threads"]), None, key="share").result()
    finally:
        engine.close()
    assert seen == (cores // 2, cores // 2 >= 2, cores // 2)
    assert usable_cores() == cores  # this process keeps all of its own


def _error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize(("extra", "message"), [
    (["--grid", "lr"], "expected NAME=VALUES"),
    (["--grid", "colour=red"], "has no setting 'colour'"),
    (["--random", "lr=log:-1:1"], "LOW > 0"),
    (["--seeds", "0,x"], "--seeds"),
])
def test_cli_refuses_a_bad_sweep_in_one_line_before_any_run(extra, message, tmp_path, capsys) -> None:
    out = tmp_path / "sweep"
    assert main(["sweep", "--model", "mlp", "--out", str(out), *extra]) == 2
    assert message in _error_line(capsys)
    assert not out.exists()


def test_cli_refuses_an_unwritable_out(tmp_path, capsys) -> None:
    taken = tmp_path / "file"
    taken.write_text("mine")
    assert main(["sweep", "--model", "mlp", "--grid", "lr=0.1", "--out", str(taken)]) == 2
    assert "not a folder" in _error_line(capsys)


def test_cli_cluster_without_dask_says_how_to_get_it(tmp_path, capsys, monkeypatch) -> None:
    import digitlab.engines

    monkeypatch.delattr(digitlab.engines, "DaskEngine", raising=False)
    assert main(["sweep", "--model", "mlp", "--grid", "lr=0.1", "--out", str(tmp_path / "s"),
                 "--cluster", "tcp://127.0.0.1:8786"]) == 2
    assert "pip install 'digitlab[dask]'" in _error_line(capsys)


def test_cli_sweep_writes_results_table_and_report(tmp_path, capsys) -> None:
    out = tmp_path / "sweep"
    code = main(["sweep", "--model", "mlp", "--hidden", "8", "--epochs", "2", "--grid", "lr=0.01,0.1",
                 "--workers", "1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "best on validation" in printed
    assert "report.html" in printed
    assert {p.name for p in out.iterdir()} >= {"results.csv", "results.json", "report.html", "runs"}
