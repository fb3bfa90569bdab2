"""benchmarks/run_all.py: RESULT lines -> rows -> one table and an exit code.

The real benchmarks take many minutes, so the end-to-end tests run run_all on
a folder of tiny fake ``bench_*.py`` scripts instead.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # run_all imports _results as its sibling, as a script does

import run_all  # noqa: E402
from _results import PREFIX  # noqa: E402


def result(name: str = "softmax", *, met: bool = True, **fields: object) -> str:
    """One RESULT line as ``_results.report`` prints it."""
    row = {"name": name, "digitlab": 2.0, "reference": 10.0, "unit": "s", "ratio": 0.2,
           "target": "time ratio <= 0.25", "met": met, "note": "", "load_average": 0.5}
    return PREFIX + json.dumps({**row, **fields})


# ---------------------------------------------------------------- parse_results


def test_parse_results_picks_result_lines_out_of_normal_output() -> None:
    text = "\n".join([
        "BLAS: [('openblas', 2)]",
        result("first", digitlab=1.5),
        "  test accuracy by epoch: 0.81 0.84",
        "a line that mentions RESULT {\"name\": \"not me\"} midway",
        result("second", met=False, ratio=float("nan")),
        "",
    ])
    rows = run_all.parse_results(text)
    assert [row["name"] for row in rows] == ["first", "second"]
    assert rows[0]["digitlab"] == 1.5
    assert rows[0]["met"] is True
    assert rows[1]["met"] is False
    assert math.isnan(rows[1]["ratio"])  # report() writes NaN when a target was never reached


def test_parse_results_of_output_without_result_lines_is_empty() -> None:
    assert run_all.parse_results("just\nsome output\n") == []


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (PREFIX + '{"name": "softmax", "digitlab": 2.0', "Expecting"),
        (PREFIX + "[1, 2]", "not a JSON object"),
        (PREFIX + json.dumps({"name": "softmax", "digitlab": 1.0}), "missing reference, unit"),
        (result(met="yes"), "'met' is 'yes'"),
    ],
)
def test_a_malformed_result_line_is_an_error_naming_the_line(line: str, reason: str) -> None:
    text = "\n".join(["warming up", result("fine"), line, result("after")])
    with pytest.raises(ValueError, match="malformed RESULT line") as caught:
        run_all.parse_results(text, source="bench_x.py")
    message = str(caught.value)
    assert "bench_x.py, line 3" in message
    assert repr(line) in message
    assert reason in message


# ---------------------------------------------------------------- table and verdicts


def test_render_table_has_one_aligned_line_per_row_with_verdicts() -> None:
    rows = run_all.parse_results("\n".join([
        result("softmax on 60,000 images", digitlab=12.345, reference=61.0, ratio=0.2024),
        result("guess-and-check", digitlab=123456.7, reference=987.6, unit="candidates/s",
               ratio=125.0, target="speed-up >= 100x"),
        result("mlp", met=False, digitlab=float("nan"), ratio=float("nan"),
               load_average=1.26),
    ]))
    table = run_all.render_table(rows).splitlines()
    assert len(table) == 2 + 3  # header, rule, rows
    header, rule, softmax, guess, mlp = table
    assert header.split() == ["benchmark", "digitlab", "reference", "unit", "ratio", "target",
                              "verdict", "load"]
    assert set(rule) == {"-", " "}
    assert softmax.split()[4:] == ["12.35", "61", "s", "0.2024", "time", "ratio", "<=", "0.25",
                                   "met", "0.5"]
    assert guess.split()[1:5] == ["123,457", "987.6", "candidates/s", "125"]
    assert mlp.split()[1:3] == ["-", "10"]  # a figure never measured shows as "-"
    assert mlp.split()[-2:] == ["MISSED", "1.3"]  # load average to one decimal
    # Columns line up: each starts where its header does on every line.
    for line, unit, target in ((softmax, "s ", "time ratio"), (guess, "candidates/s", "speed-up"),
                               (mlp, "s ", "time ratio")):
        assert line[header.index("unit"):].startswith(unit)
        assert line[header.index("target"):].startswith(target)


@pytest.mark.parametrize(
    ("verdicts", "failures", "code"),
    [
        ([True, True], [], 0),
        ([True, False], [], 1),
        ([False], [], 1),
        ([True, True], ["bench_cnn.py exited with code 1"], 2),
        ([False], ["bench_cnn.py exited with code 1"], 2),
    ],
)
def test_exit_code(verdicts: list[bool], failures: list[str], code: int) -> None:
    rows = [{"met": met} for met in verdicts]
    assert run_all.exit_code(rows, failures) == code


def test_collect_names_why_a_script_failed() -> None:
    output = "\n".join(["start", result("one"), "Traceback (most recent call last):"])
    rows, failure = run_all.collect("bench_x.py", 1, output)
    assert [row["name"] for row in rows] == ["one"]  # rows printed before the crash are kept
    assert rows[0]["script"] == "bench_x.py"
    assert failure == "bench_x.py exited with code 1"
    assert run_all.collect("bench_x.py", 0, "no rows here") == (
        [], "bench_x.py printed no RESULT lines"
    )
    rows, failure = run_all.collect("bench_x.py", 0, PREFIX + "{oops")
    assert rows == []
    assert failure is not None
    assert failure.startswith("bench_x.py, line 1: malformed RESULT line")
    assert run_all.collect("bench_x.py", 0, result())[1] is None


def test_write_json_writes_strict_json_with_null_for_nan(tmp_path: Path) -> None:
    rows = run_all.parse_results(result("mlp", met=False, digitlab=float("nan")))
    path = tmp_path / "rows.json"
    run_all.write_json(path, rows)
    text = path.read_text()
    assert "NaN" not in text
    assert json.loads(text) == [{**rows[0], "digitlab": None}]
    assert [p.name for p in tmp_path.iterdir()] == ["rows.json"]  # no temporary file left


# ---------------------------------------------------------------- choosing scripts


def test_select_and_quick_flags_of_the_real_benchmarks() -> None:
    everything = run_all.select(BENCHMARKS, None)
    names = [script.name for script in everything]
    assert names == sorted(names)
    assert {"bench_softmax.py", "bench_mlp.py", "bench_load.py"} <= set(names)
    assert "run_all.py" not in names
    assert [s.name for s in run_all.select(BENCHMARKS, ["mlp", "bench_softmax.py"])] == [
        "bench_mlp.py", "bench_softmax.py"
    ]
    assert run_all.quick_flag(BENCHMARKS / "bench_mlp.py") == "--dry-run"
    assert run_all.quick_flag(BENCHMARKS / "bench_softmax.py") == "--quick"
    assert run_all.quick_flag(BENCHMARKS / "bench_accuracy.py") is None  # already quick
    # the sweep's Dask row needs a cluster: run_all has bench_sweep start its own
    assert run_all.always_flags(BENCHMARKS / "bench_sweep.py") == ["--dask-local"]
    assert run_all.always_flags(BENCHMARKS / "bench_mlp.py") == []
    with pytest.raises(ValueError, match="no benchmark nonesuch in"):
        run_all.select(BENCHMARKS, ["softmax", "nonesuch"])


# ---------------------------------------------------------------- end to end on fake scripts

FAKE = """\
import argparse
import json

parser = argparse.ArgumentParser()
{quick}
args = parser.parse_args()
print("measuring {name} ...")
row = {{"name": "{name}" + (" (quick)" if getattr(args, "quick", False) else ""),
        "digitlab": 1.0, "reference": 4.0, "unit": "s", "ratio": 0.25,
        "target": "time ratio <= 0.5", "met": {met}, "note": "", "load_average": 0.1}}
print("RESULT " + json.dumps(row))
{tail}
"""


def fake(folder: Path, name: str, *, met: bool = True, quick: bool = False, tail: str = "") -> None:
    flag = 'parser.add_argument("--quick", action="store_true")' if quick else ""
    (folder / f"bench_{name}.py").write_text(
        FAKE.format(name=name, met=met, quick=flag, tail=tail), encoding="utf-8"
    )


def run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / "run_all.py"), "--dir", str(folder), *args],
        capture_output=True, text=True, check=False,
    )


def table_rows(stdout: str) -> list[str]:
    """The table's row lines: those after the header and its rule, up to the blank line."""
    lines = stdout[stdout.rindex("\nbenchmark ") + 1 :].splitlines()
    return lines[2 : lines.index("")]


def test_run_all_streams_each_script_and_prints_one_table(tmp_path: Path) -> None:
    fake(tmp_path, "alpha", quick=True)
    fake(tmp_path, "beta")
    (tmp_path / "helper.py").write_text("raise SystemExit('not a benchmark')\n")
    out = tmp_path / "rows.json"
    done = run(tmp_path, "--quick", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "=== bench_alpha.py --quick" in done.stdout  # its own quick flag was passed ...
    assert "=== bench_beta.py\n" in done.stdout  # ... and none to a script without one
    assert "measuring alpha ..." in done.stdout
    assert done.stdout.index("measuring alpha") < done.stdout.index("measuring beta")
    alpha, beta = table_rows(done.stdout)
    assert alpha.startswith("alpha (quick) ")
    assert beta.startswith("beta ")
    assert alpha.split()[-2:] == beta.split()[-2:] == ["met", "0.1"]
    assert "2 rows: 2 met, 0 MISSED" in done.stdout
    rows = json.loads(out.read_text())
    assert [(row["name"], row["script"], row["met"]) for row in rows] == [
        ("alpha (quick)", "bench_alpha.py", True), ("beta", "bench_beta.py", True)
    ]


def test_run_all_exit_code_1_when_a_row_missed(tmp_path: Path) -> None:
    fake(tmp_path, "alpha")
    fake(tmp_path, "beta", met=False)
    done = run(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    verdicts = [(row.split()[0], row.split()[-2]) for row in table_rows(done.stdout)]
    assert verdicts == [("alpha", "met"), ("beta", "MISSED")]
    assert "2 rows: 1 met, 1 MISSED" in done.stdout


def test_run_all_exit_code_2_names_the_script_that_failed(tmp_path: Path) -> None:
    fake(tmp_path, "alpha", met=False)
    fake(tmp_path, "broken", tail="raise RuntimeError('boom')")
    fake(tmp_path, "gamma")
    done = run(tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "RuntimeError: boom" in done.stdout  # its traceback streamed with its output
    assert "FAILED: bench_broken.py exited with code 1" in done.stdout
    assert "gamma" in done.stdout.split("FAILED")[0]  # the scripts after it still ran
    assert "3 rows: 2 met, 1 MISSED" in done.stdout


def test_run_all_passes_dask_local_to_a_script_that_declares_it(tmp_path: Path) -> None:
    tail = 'print("dask-local:", args.dask_local)'
    flag = 'parser.add_argument("--dask-local", action="store_true")'
    (tmp_path / "bench_sweepish.py").write_text(
        FAKE.format(name="sweepish", met=True, quick=flag, tail=tail), encoding="utf-8")
    for extra in ((), ("--quick",)):
        done = run(tmp_path, *extra)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "dask-local: True" in done.stdout
        assert "bench_sweepish.py --dask-local" in done.stdout  # the heading shows the command


def test_run_all_only_runs_the_named_scripts(tmp_path: Path) -> None:
    fake(tmp_path, "alpha")
    fake(tmp_path, "beta", met=False)
    done = run(tmp_path, "--only", "alpha")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "measuring beta" not in done.stdout
    unknown = run(tmp_path, "--only", "delta")
    assert unknown.returncode == 2
    assert "no benchmark delta" in unknown.stderr
