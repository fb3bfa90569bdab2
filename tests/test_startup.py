"""Start-up costs: what the command line and a run import, and only when needed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from digitlab.lazy_import import lazy_import


def test_a_lazy_module_stays_out_of_sys_modules_until_used(tmp_path, monkeypatch) -> None:
    (tmp_path / "heavy_thing.py").write_text("LOADED = True\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "heavy_thing", raising=False)
    module = lazy_import("heavy_thing")
    # Libraries ask sys.modules "is torch in use?"; a lazy stand-in there would import it.
    assert "heavy_thing" not in sys.modules
    assert module.LOADED is True
    assert sys.modules["heavy_thing"].LOADED is True
    assert lazy_import("heavy_thing") is sys.modules["heavy_thing"]


def test_before_runs_once_just_before_the_real_import(tmp_path, monkeypatch) -> None:
    (tmp_path / "reads_env.py").write_text(
        "import os\nSEEN = os.environ.get('DIGITLAB_TEST_SETTING')\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "reads_env", raising=False)
    monkeypatch.delenv("DIGITLAB_TEST_SETTING", raising=False)
    calls = []

    def before() -> None:
        calls.append(1)
        monkeypatch.setenv("DIGITLAB_TEST_SETTING", "set before import")

    module = lazy_import("reads_env", before=before)
    assert calls == []  # nothing runs until the module is used
    assert module.SEEN == "set before import"
    assert module.SEEN == "set before import"
    assert calls == [1]


def test_openmp_threads_sleep_only_when_the_cores_are_busy(monkeypatch) -> None:
    import os

    from digitlab import engines

    monkeypatch.setattr(engines, "usable_cores", lambda: 2)
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    engines.openmp_wait_policy_for_load()
    assert "OMP_WAIT_POLICY" not in os.environ  # a free machine: spinning is faster
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 1.0, 1.0))
    engines.openmp_wait_policy_for_load()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice stays
    engines.openmp_wait_policy_for_load()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    engines.openmp_wait_policy_for_load()
    assert "OMP_WAIT_POLICY" not in os.environ


def test_a_missing_module_is_an_import_error_at_once() -> None:
    import pytest

    with pytest.raises(ImportError, match="no_such_module_here"):
        lazy_import("no_such_module_here")


def _modules_after(code: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                          capture_output=True, text=True, check=True, timeout=600)
    return set(done.stdout.split())


def test_a_run_loads_its_data_and_its_datas_figures_before_importing_scikit_learn() -> None:
    # train() sends the data's own figures to the drawing process before it imports the
    # models, so they are drawn while scikit-learn (0.7 s) loads (see digitlab.drawing).
    modules = _modules_after(
        "from digitlab.run import RunConfig, check_model_settings, prepare_data, validation_fraction_of\n"
        "from digitlab.data_figures import data_figures\n"
        "config = RunConfig(model='mlp', settings={'hidden': (10,)})\n"
        "check_model_settings(config)\n"
        "data = prepare_data(config).with_validation(validation_fraction_of(config), 0)\n"
        "assert set(data_figures(data)) == {'average_digits', 'digit_values'}")
    assert {"sklearn", "matplotlib", "torch", "digitlab.models"} & modules == set()


def test_loading_a_dataset_imports_no_image_processing() -> None:
    # scipy.ndimage (0.2-0.3 s) is for user pictures: a run waits for its data without it.
    modules = _modules_after(
        "from digitlab.run import RunConfig, prepare_data\n"
        "prepare_data(RunConfig(model='majority'))")
    assert "scipy.ndimage" not in modules
    assert "digitlab.data.preprocess" in modules  # its pictures' code is there, not yet run


def test_training_a_numpy_model_with_figures_never_imports_torch(tmp_path) -> None:
    # matplotlib checks sys.modules["torch"].Tensor on every plotted array. train() from
    # Python draws in its own process (the command's drawing process: test_drawing.py).
    modules = _modules_after(
        "from digitlab.run import RunConfig, train\n"
        f"train(RunConfig(model='majority'), {str(tmp_path / 'run')!r})")
    assert "matplotlib" in modules
    assert "torch" not in modules


def test_a_run_imports_the_download_libraries_only_to_download(tmp_path) -> None:
    # requests (with urllib3) costs about 0.1 s of every run's start-up; only a download needs it
    modules = _modules_after(
        "from digitlab.cli import main\n"
        f"assert main(['train', '--model', 'majority', '--quiet', '--out', {str(tmp_path / 'run')!r}]) == 0")
    assert "requests" not in modules
    assert "urllib3" not in modules


def _keyword_settings(cls: type) -> dict[str, object]:
    import inspect

    return {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _typed(table: dict[str, object]) -> list[tuple[str, str, str]]:
    # type and repr: --help prints the repr, and the parser's type comes from the default's
    return [(name, type(value).__name__, repr(value)) for name, value in table.items()]


def test_the_catalog_equals_every_models_real_settings() -> None:
    from digitlab.catalog import DEFAULT_VALIDATION, MODEL_SETTINGS, model_kinds
    from digitlab.models import MODELS

    assert model_kinds() == sorted(MODELS)
    real = {kind: _keyword_settings(MODELS[kind]) for kind in sorted(MODELS)}
    listed = {kind: MODEL_SETTINGS[kind] for kind in sorted(MODELS)}
    assert {k: _typed(v) for k, v in listed.items()} == {k: _typed(v) for k, v in real.items()}, (
        f"update digitlab/catalog.py's MODEL_SETTINGS to:\n{real!r}")
    fractions = {kind: MODELS[kind].default_validation for kind in sorted(MODELS)}
    assert {kind: DEFAULT_VALIDATION[kind] for kind in sorted(MODELS)} == fractions, (
        f"update digitlab/catalog.py's DEFAULT_VALIDATION to:\n{fractions!r}")


def test_the_catalog_lists_the_cnn_only_with_pytorch(monkeypatch) -> None:
    import importlib.util

    from digitlab import catalog

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real_find_spec(name, *a))
    assert "cnn" not in catalog.model_kinds()
    assert "mlp" in catalog.model_kinds()


def test_the_catalog_equals_the_run_configs_defaults() -> None:
    import dataclasses

    from digitlab.catalog import RUN_DEFAULTS
    from digitlab.run import RunConfig

    real = {f.name: f.default for f in dataclasses.fields(RunConfig)
            if f.default is not dataclasses.MISSING}
    assert _typed(RUN_DEFAULTS) == _typed(real), f"update digitlab/catalog.py's RUN_DEFAULTS to:\n{real!r}"


def test_help_and_usage_errors_import_no_model_nor_numpy() -> None:
    modules = _modules_after(
        "from digitlab.cli import main\n"
        "assert main(['train', '--help']) == 0\n"
        "assert main(['train', '--model', 'nope']) == 2\n"
        "assert main(['--help']) == 0")
    heavy = {"numpy", "sklearn", "scipy", "matplotlib", "torch", "digitlab.models", "digitlab.run"}
    assert heavy & modules == set()


def test_train_help_lists_every_models_settings_with_defaults(capsys) -> None:
    from digitlab.cli import RUN_SETTINGS, main
    from digitlab.models import MODELS

    assert main(["train", "--help"]) == 0
    helptext = " ".join(capsys.readouterr().out.split())
    for kind, cls in MODELS.items():
        assert kind in helptext
        for name, default in _keyword_settings(cls).items():
            if name not in RUN_SETTINGS:
                assert f"--{name.replace('_', '-')} " in helptext
                assert f"{kind}: {default!r}" in helptext


def test_the_heavy_imports_run_in_a_thread_that_is_gone_after(monkeypatch) -> None:
    import importlib
    import threading

    from digitlab.run import start_heavy_imports

    seen = []
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module",
                        lambda name: (seen.append(threading.current_thread().name), real(name))[1])
    start_heavy_imports()()
    assert seen
    assert set(seen) == {"digitlab-imports"}
    # gone: a drawing process may still be forked safely (digitlab.drawing.can_fork)
    assert "digitlab-imports" not in {thread.name for thread in threading.enumerate()}

    def broken(name):
        raise ImportError(f"no module named {name!r}")

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(ImportError, match=r"digitlab\.models"):  # raised here, not lost in the thread
        start_heavy_imports()()
