"""DaskEngine on a real cluster: `dask scheduler` and two `dask worker` processes on 127.0.0.1."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from script_modules import load_script

pytest.importorskip("distributed")

from dask_tasks import environ, square
from digitlab.engines import DaskEngine
from digitlab.errors import DataError, SettingsError

ROOT = Path(__file__).resolve().parents[1]


def _load_cluster_module():
    # benchmarks/_cluster.py starts clusters for the benchmarks too: one way to start them.
    return load_script("benchmarks/_cluster.py")

@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A scheduler and two workers (one process, one thread each), as a user starts them;
    the workers import digitlab from this checkout and dask_tasks from tests/."""
    clusters = _load_cluster_module()
    with clusters.local_cluster(2, tmp_path_factory.mktemp("dask-cluster"),
                                pythonpath=[ROOT / "src", ROOT / "tests"]) as running:
        yield running


@pytest.fixture
def engine(cluster):
    engine = DaskEngine(cluster.address)
    yield engine
    engine.close()


def test_importing_engines_does_not_import_dask() -> None:
    code = ("import sys, digitlab.engines; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_without_dask_the_engine_says_how_to_get_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails as if absent
    with pytest.raises(SettingsError, match=r"pip install 'digitlab\[dask\]'"):
        DaskEngine("tcp://127.0.0.1:8786")


def test_no_scheduler_is_one_line_naming_the_address() -> None:
    with socket.socket() as probe:  # a port nothing listens on: bound, then freed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    with pytest.raises(SettingsError) as caught:
        DaskEngine(address, timeout=1)
    message = str(caught.value)
    assert message.startswith(f"no Dask scheduler answers at {address}: ")
    assert "\n" not in message


def test_an_address_that_is_not_one_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match=r"no Dask scheduler answers at ftp://x:1: .*scheme"):
        DaskEngine("ftp://x:1", timeout=1)


def test_workers_allocate_as_a_local_process_does(cluster) -> None:
    # dask's nanny sets MALLOC_TRIM_THRESHOLD_, which made each MLP fit 2.5x slower than in
    # a local process; the cluster is started without it, as the README says to start one.
    assert cluster.client.run(environ, "MALLOC_TRIM_THRESHOLD_") == dict.fromkeys(
        cluster.client.scheduler_info()["workers"])


def test_workers_are_quiet_while_a_run_holds_the_gil(cluster) -> None:
    # Dask's defaults wake a worker's event loop every 20 ms and sample its stacks every
    # 10 ms; started as the README says, the tick is 1 s and the profiler is off.
    def settings() -> tuple[object, object]:
        import dask

        return (dask.config.get("distributed.admin.tick.interval"),
                dask.config.get("distributed.worker.profile.enabled"))

    assert set(cluster.client.run(settings).values()) == {("1s", False)}


def test_the_readme_starts_workers_as_the_tests_do() -> None:
    environ = _load_cluster_module().WORKER_ENVIRON
    assert len(environ) == 3
    line = " ".join(f"{name}={shlex.quote(value)}" for name, value in environ.items())
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"{line} dask worker tcp://HOST:8786 --nworkers 1 --nthreads 1" in readme


def test_results_on_the_cluster_equal_local_ones(cluster, engine) -> None:
    specs = [{"x": x, "sleep": 0.05} for x in range(10)]
    futures = [engine.submit(square, spec, key=f"square-{spec['x']}") for spec in specs]
    remote = [future.result() for future in futures]
    local = [square(spec) for spec in specs]
    assert [(r["x"], r["square"]) for r in remote] == [(r["x"], r["square"]) for r in local]
    worker_pids = set(cluster.client.run(os.getpid).values())
    assert {r["pid"] for r in remote} <= worker_pids  # ran on the workers, not here
    assert engine.where == cluster.address


def test_as_completed_yields_every_future_once(engine) -> None:
    futures = [engine.submit(square, {"x": x, "sleep": 0.02 * (x % 3)}, key=f"done-{x}")
               for x in range(12)]
    finished = list(engine.as_completed(futures))
    assert sorted(map(id, finished)) == sorted(map(id, futures))
    assert sorted(f.result()["square"] for f in finished) == [x * x for x in range(12)]


def test_a_failing_run_raises_its_own_error_once(engine, tmp_path) -> None:
    future = engine.submit(square, {"x": 7, "fail": True, "started_in": str(tmp_path)}, key="fails")
    with pytest.raises(DataError, match="run-7: failed on purpose"):
        future.result()
    assert len(list(tmp_path.iterdir())) == 1  # not retried: bad settings would fail again


def test_close_leaves_the_cluster_up(cluster) -> None:
    first = DaskEngine(cluster.address)
    first.close()
    again = DaskEngine(cluster.address)
    try:
        assert again.submit(square, {"x": 3}, key="after-close").result()["square"] == 9
    finally:
        again.close()
    assert len(cluster.client.scheduler_info()["workers"]) == 2


def test_close_cancels_the_runs_not_yet_started(cluster, tmp_path) -> None:
    """Ctrl-C closes the engine: the runs already on a worker finish there (a thread cannot
    be stopped), no other run starts, and the scheduler keeps none of them."""
    started = tmp_path / "started"
    started.mkdir()
    engine = DaskEngine(cluster.address)
    try:
        futures = [engine.submit(square, {"x": x, "sleep": 1.0, "started_in": str(started)},
                                 key=f"cancel-{x}") for x in range(8)]
        while len(list(started.iterdir())) < 2:
            assert not any(f.done() for f in futures)
            time.sleep(0.02)
    finally:
        engine.close()
    assert all(f.cancelled() for f in futures)
    time.sleep(1.5)  # the two running finish; a run not cancelled would start by then
    _wait_until_idle(cluster)

    def ours(dask_scheduler) -> list[str]:
        return [str(key) for key in dask_scheduler.tasks if str(key).startswith("cancel-")]

    assert cluster.client.run_on_scheduler(ours) == []
    assert len(list(started.iterdir())) == 2


def test_killing_a_worker_mid_run_loses_nothing(cluster, engine, tmp_path) -> None:
    """SIGKILL one worker (and its nanny: a machine lost) while it runs a task: every task
    still finishes, the lost one on the other worker."""
    started = tmp_path / "started"
    started.mkdir()
    specs = [{"x": x, "sleep": 1.0, "started_in": str(started)} for x in range(6)]
    futures = [engine.submit(square, spec, key=f"kill-{spec['x']}") for spec in specs]
    while not any(started.iterdir()):
        # every task fails at once (say, a worker cannot import the task): say so, don't hang
        assert not all(f.done() for f in futures), [f.exception() for f in futures]
        time.sleep(0.02)
    marker = next(started.iterdir()).name
    lost_x, lost_pid = map(int, marker.split("-"))
    cluster.kill_worker(cluster.worker_of(lost_pid))
    try:
        results = [f.result() for f in engine.as_completed(futures)]
        assert sorted(r["x"] for r in results) == list(range(6))
        assert all(r["square"] == r["x"] ** 2 for r in results)
        rerun = next(r for r in results if r["x"] == lost_x)
        assert rerun["pid"] != lost_pid  # finished elsewhere
        assert all(r["pid"] != lost_pid for r in results)
    finally:
        cluster.add_worker()  # the other tests expect two workers again
        cluster.wait_for_workers(2)


def test_a_sweep_on_the_cluster_gives_the_same_table_as_local(cluster, local_table, tmp_path, capsys) -> None:
    """`digitlab sweep --cluster ADDRESS`: 8 runs, the same rows as on local processes."""
    sweep = pytest.importorskip("digitlab.sweep")
    from digitlab.cli import main

    common = ["sweep", "--model", "mlp", "--hidden", "8", "--epochs", "2",
              "--grid", "lr=0.01,0.1", "--seeds", "0,1,2,3", "--quiet"]
    assert main([*common, "--cluster", cluster.address, "--out", str(tmp_path / "dask")]) == 0
    capsys.readouterr()
    # the local table is the same sweep, planned in Python (_tiny_sweep): also equal ids
    assert _table(sweep.read_results(tmp_path / "dask").values()) == local_table
    where = {row["where"] for row in sweep.read_results(tmp_path / "dask").values()}
    assert where
    assert all(w is not None for w in where)


# ---------------------------------------------------------------- sweeps that lose workers or stop

SWEEP_TIMES = ("seconds", "fit_seconds", "where")  # what may differ between two runs of one sweep


def _tiny_sweep():
    """8 tiny MLP runs (2 learning rates x 4 seeds), as `digitlab sweep --grid lr=0.01,0.1
    --seeds 0,1,2,3` plans them."""
    from digitlab.run import RunConfig
    from digitlab.sweep import plan_sweep, sweep_points

    base = RunConfig(model="mlp", settings={"hidden": (8,), "epochs": 2})
    return base, plan_sweep(base, sweep_points({"lr": [0.01, 0.1]}, {}, 1, 0), [0, 1, 2, 3])


def _table(rows) -> dict[str, dict]:
    return {row["run_id"]: {k: v for k, v in row.items() if k not in SWEEP_TIMES} for row in rows}


@pytest.fixture(scope="module")
def local_table(tmp_path_factory) -> dict[str, dict]:
    """The tiny sweep on two local processes: what the cluster's sweeps must equal."""
    from digitlab.engines import LocalEngine
    from digitlab.sweep import run_sweep

    base, configs = _tiny_sweep()
    engine = LocalEngine(2)
    try:
        result = run_sweep(configs, tmp_path_factory.mktemp("local-sweep"), engine, base=base)
    finally:
        engine.close()
    assert [row["status"] for row in result.rows] == ["ok"] * 8
    return _table(result.rows)


def test_killing_a_worker_mid_sweep_loses_nothing(cluster, local_table, tmp_path) -> None:
    """SIGKILL the worker still on its first run when the other finishes one: the sweep
    ends with all 8 runs ok, the lost ones rerun on the other worker, the same table."""
    from digitlab.sweep import run_sweep

    base, configs = _tiny_sweep()
    killed: dict[str, Any] = {}

    def kill_the_other_worker(row: dict[str, Any], best: dict[str, Any] | None) -> None:
        if killed:
            return
        finished_pid = int(row["where"].rsplit(":", 1)[1])
        pids = cluster.client.run(os.getpid)  # worker address -> its pid
        address, pid = next((a, p) for a, p in pids.items() if p != finished_pid)
        killed["pid"] = pid
        killed["keys"] = list(cluster.client.processing()[address])  # its runs in flight
        cluster.kill_worker(cluster.worker_of(pid))

    engine = DaskEngine(cluster.address)
    try:
        result = run_sweep(configs, tmp_path / "sweep", engine, base=base, on_run=kill_the_other_worker)
        assert killed["keys"], "the worker was killed with no run in flight: nothing was tested"
        assert [row["status"] for row in result.rows] == ["ok"] * 8, [r["error"] for r in result.rows]
        assert _table(result.rows) == local_table
        rows = {f"digitlab-run-{row['run_id']}": row for row in result.rows}
        assert all(not rows[key]["where"].endswith(f":{killed['pid']}") for key in killed["keys"])
        assert len(cluster.client.scheduler_info()["workers"]) == 1  # the kill did happen
    finally:
        engine.close()
        cluster.add_worker()  # the other tests expect two workers again
        cluster.wait_for_workers(2)


def _wait_until_idle(cluster) -> None:
    """Until no worker still runs a task. Ctrl-C cannot stop a run a worker thread is
    executing: it finishes in the background, and would race its rerun (on the other
    worker) writing the same run folder."""
    def running(dask_worker) -> int:
        return sum(task.state in ("executing", "cancelled", "resumed", "long-running")
                   for task in dask_worker.state.tasks.values())

    while any(cluster.client.run(running).values()):
        time.sleep(0.1)


def _file_times(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_an_interrupted_cluster_sweep_resumes_without_redoing_finished_runs(
        cluster, local_table, tmp_path) -> None:
    """Ctrl-C after 3 of 8 runs on the cluster keeps those 3 rows; the same sweep into the
    same folder then runs only the other 5 and ends with the full local table."""
    from digitlab.sweep import read_results, run_sweep

    base, configs = _tiny_sweep()
    out = tmp_path / "sweep"
    seen: list[str] = []

    def interrupt_after_three(row: dict[str, Any], best: dict[str, Any] | None) -> None:
        seen.append(row["run_id"])
        if len(seen) == 3:
            raise KeyboardInterrupt

    engine = DaskEngine(cluster.address)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(configs, out, engine, base=base, on_run=interrupt_after_three)
    finally:
        engine.close()
    _wait_until_idle(cluster)
    kept = read_results(out)
    assert sorted(kept) == sorted(seen)
    assert all(row["status"] == "ok" for row in kept.values())
    times = {rid: _file_times(out / "runs" / rid) for rid in kept}
    assert all(times.values())  # each finished run left its files

    plan: list[tuple[int, int]] = []
    rerun: list[str] = []
    engine = DaskEngine(cluster.address)
    try:
        result = run_sweep(configs, out, engine, base=base, on_start=lambda n, skipped: plan.append((n, skipped)),
                           on_run=lambda row, best: rerun.append(row["run_id"]))
    finally:
        engine.close()
    assert plan == [(5, 3)]
    assert sorted(rerun) == sorted(set(local_table) - set(kept))
    final = {row["run_id"]: row for row in result.rows}
    assert all(final[rid] == row for rid, row in kept.items())  # seconds and where too: not rerun
    assert {rid: _file_times(out / "runs" / rid) for rid in kept} == times
    assert _table(result.rows) == local_table
