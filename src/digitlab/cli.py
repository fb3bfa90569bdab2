"""The ``digitlab`` command line: the only module that talks to people.

Every command is ``main(argv) -> exit code``. Errors digitlab raises on
purpose (bad data, bad settings) become one line on stderr and exit code 2;
warnings about the data (skipped stray files, hold-out splits) become one
line each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.table import Table
from rich.text import Text

from digitlab import __version__
from digitlab.errors import DataWarning, DigitlabError, OutputError, SettingsError, show_path
from digitlab.web import MAX_BODY_BYTES

if TYPE_CHECKING:
    from digitlab.drawing import Drawer

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_SKIPPED = 3  # predict --on-error skip: some pictures answered, some skipped
DATA_HELP = (
    "a named dataset (mnist-sample, digits, fashion-mnist, mnist) or a path: an image folder "
    "tree or a folder of images and labels.csv, a folder of IDX files, a Keras .npz, a CSV or "
    "a MATLAB .mat"
)


# ---------------------------------------------------------------- parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show every real default in --help, but not the noise of None and False."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.required:
            return action.help or ""
        return super()._get_help_string(action) or ""


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and a hint, like every other error, not a page of usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"digitlab: error: {one_line(message)} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _Parser(
        prog="digitlab",
        description="Handwritten-digit classification: load any MNIST layout, train, inspect.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"digitlab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train(commands)
    _add_evaluate(commands)
    _add_inspect(commands)
    _add_predict(commands)
    _add_lab(commands)
    _add_data(commands)
    _add_serve(commands)
    _add_export(commands)
    _add_sweep(commands)
    return parser


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="share held out as a stratified test split when the source has none")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument("--label-column", default=None,
                        help="CSV only: label column name or index (default: 'label' or the first)")
    parser.add_argument("--labels", default=None, metavar="FILE",
                        help="a flat folder of images only: its labels file (filename,label "
                        "per line) when it is not labels.csv in the folder")


def _add_normalise(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--normalise", "--normalize", action="store_true",
                        help="normalise every image as predict normalises a picture (ink made "
                        "white on black, cropped, scaled, centred): images may differ in size "
                        "and polarity, and the model reads pictures as it saw its training data")


def _add_train(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from digitlab.catalog import model_kinds  # not digitlab.models: --help must not wait for it

    parser = commands.add_parser(
        "train", help="train a model and write its metrics",
        description="Train a model, evaluate it beside the majority-class baseline, and write "
        "metrics.json and config.json into the run folder.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--data", default="mnist-sample", help=DATA_HELP)
    parser.add_argument("--model", default="template", choices=model_kinds(), help="model to train")
    parser.add_argument("--task", default="all",
                        help="'all' digits, 'is-D' (D against the rest) or 'A-vs-B' (only A and B)")
    parser.add_argument("--image-size", type=int, default=None, choices=(28, 20, 8),
                        help="resize images to SIZExSIZE first (default: keep the source's size)")
    parser.add_argument("--deskew", action="store_true",
                        help="stand slanted digits upright and centre them first; the model "
                        "remembers it, so evaluate, predict and serve do the same")
    _add_normalise(parser)
    _add_data_options(parser)
    parser.add_argument("--validation-fraction", type=float, default=None,
                        help="share of the train images held out (stratified, seeded by --seed) as "
                        "the validation split that chooses epochs, the kept epoch and calibration; "
                        "default 0.1, 0 for the baselines; 0 trains on all of them")
    parser.add_argument("--out", type=Path, required=True, help="run folder to write into")
    parser.add_argument("--config", type=Path, default=None,
                        help="replay a run: take every setting from its config.json (options "
                        "given here override it); the same settings give the same model file")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    parser.add_argument("--verbose", action="store_true", help="also print each new best")
    _add_analysis_options(parser)
    _add_model_settings(parser)
    _defaults_from_run_config(parser)
    parser.set_defaults(handler=_cmd_train)


def _add_analysis_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target-digit", type=int, default=None, metavar="N",
                        help="rank which digits are mistaken for N, starting with the share of "
                        "N read as N (default: 5 when the task has more than two classes)")
    parser.add_argument("--worst-digit", type=int, default=None, metavar="N",
                        help="show the worst-written images of N only: the lowest probability "
                        "of their true label (default: the worst of every digit)")


def _defaults_from_run_config(parser: argparse.ArgumentParser) -> None:
    """Run options default to None, so that ``--config`` can tell the options given
    from those left out; the real defaults are RunConfig's, shown in the help."""
    from digitlab.catalog import RUN_DEFAULTS as defaults  # RunConfig's, without importing run

    for action in parser._actions:
        if action.dest in defaults:
            default = defaults[action.dest]
            if default not in (None, False) and "default" not in (action.help or ""):
                action.help = f"{action.help} (default: {default})"
            action.default = None


def _add_evaluate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "evaluate", help="evaluate a saved model on a dataset",
        description="Accuracy beside the majority baseline and balanced accuracy, per-class "
        "figures and costs of a saved model on one split, or on a range of it.",
        formatter_class=_HelpFormatter,
    )
    _add_model_path(parser)
    parser.add_argument("--data", default="mnist-sample", help=DATA_HELP)
    parser.add_argument("--split", default="test", choices=("train", "test"), help="split to evaluate")
    parser.add_argument("--start", type=int, default=0, help="first image of the range")
    parser.add_argument("--count", type=int, default=None, help="images in the range (default: all)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_analysis_options(parser)
    _add_data_options(parser)
    parser.set_defaults(handler=_cmd_evaluate)


def _add_inspect(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "inspect", help="figures and a report of what a saved model learned",
        description="Write figures/*.png, metrics.json and report.html for a saved model.",
        formatter_class=_HelpFormatter,
    )
    _add_model_path(parser)
    parser.add_argument("--data", default="mnist-sample", help=DATA_HELP)
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    _add_analysis_options(parser)
    _add_data_options(parser)
    parser.set_defaults(handler=_cmd_inspect)


def _add_model_path(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="a model.safetensors written by digitlab train")


def _add_predict(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "predict", help="read digits in your own pictures",
        description="Label and class probabilities of each picture. Each one first gets the "
        "MNIST-style normalisation (dark ink on light paper is inverted, the digit is cropped, "
        "scaled into a 20x20 box and centred by centre of mass), so photos of digits work.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("model", type=Path, metavar="[MODEL]",
                        help="a model.safetensors written by digitlab train; leave it out to use "
                        "the bundled reader (a CNN trained on the full MNIST)")
    parser.add_argument("images", nargs="*", help="image files or folders of images")
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true",
                         help="print a JSON list of {path, label, name, probabilities}")
    formats.add_argument("--csv", action="store_true",
                         help="print CSV: path,label,name,confidence and p_<class> per class")
    parser.add_argument("--output", type=Path, default=None, metavar="FILE",
                        help="write the --csv or --json answers to FILE instead of stdout "
                        "(whole or not at all)")
    parser.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                        help="a picture that cannot be read or shows no digit: 'stop' (exit 2, "
                        "no answers) or 'skip' it (one line on stderr each, a count at the end, "
                        f"exit {EXIT_SKIPPED} when any was skipped)")
    parser.add_argument("--raw", action="store_true",
                        help="skip the normalisation: images are already white ink on black, "
                        "at the model's size")
    _add_min_confidence(parser)
    parser.add_argument("--explain", action="store_true",
                        help="say why: a heat-map PNG per picture, NAME.explain.png (the digit "
                        "the model saw; red where its ink supports the answer, blue where it "
                        "argues against); with --json the map comes as numbers in each record "
                        "(and PNGs only with --explain-dir)")
    parser.add_argument("--explain-dir", type=Path, default=None, metavar="DIR",
                        help="folder for the --explain PNGs (default: the --output file's "
                        "folder, else the current folder)")
    parser.add_argument("--show-input", type=Path, default=None, metavar="DIR",
                        help="write the 28x28 image the model saw for each picture into DIR "
                        "(NAME.input.png): check what the normalisation found as ink")
    parser.set_defaults(handler=_cmd_predict)


def _add_min_confidence(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--min-confidence", type=_probability, default=0.0, metavar="P",
                        help="answer 'unknown' when the model's largest (calibrated) probability "
                        "is below P, 0 to 1; the README gives a measured threshold")


def _add_lab(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "lab", help="replay the classic exercises, faithful and fixed, side by side",
        description="Run each recipe twice, as the classic exercise does it and the way it "
        "should be done, on bundled data; write one comparison report. Recipes: two-detector, "
        "digits-mlp, softmax, zero-vs-one, relu-net (default: all).",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("recipes", nargs="*", metavar="RECIPE", help="recipes to run (default: all)")
    parser.add_argument("--out", type=Path, default=Path("runs/lab"), help="folder to write into")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    parser.add_argument("--seeds", default=None, metavar="S1,S2",
                        help="run the recipes once per seed (in place of the exercises' seeds) and "
                        "show each figure's mean and spread; each seed's lab in OUT/seed-N/")
    parser.add_argument("--workers", type=int, default=None,
                        help="with --seeds: local processes (default: one per usable core)")
    parser.add_argument("--cluster", default=None, metavar="tcp://HOST:8786",
                        help="with --seeds: run on this Dask scheduler (needs the dask extra)")
    parser.set_defaults(handler=_cmd_lab)


def _add_export(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "export", help="write a saved model as an ONNX file for onnxruntime",
        description="Write the model as ONNX: input 'pixels' float32 (n, h*w) = pixel / 255 of "
        "images prepared as the training images were (MNIST-style: light ink on dark); outputs "
        "'probabilities' (in the order of the model's classes) and 'label'. The preparation "
        "steps are in the file's metadata. Needs the onnx extra: pip install 'digitlab[onnx]'.",
        formatter_class=_HelpFormatter,
    )
    _add_model_path(parser)
    parser.add_argument("--onnx", type=Path, required=True, metavar="OUT",
                        help="the ONNX file to write")
    parser.set_defaults(handler=_cmd_export)


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "serve", help="a draw-a-digit web page and an HTTP prediction API",
        description="Serve a page to draw digits on and watch the model read them, the run's "
        "report, and an HTTP API (POST /predict, GET /model, GET /health, /openapi.json). "
        "Needs the web extra: pip install 'digitlab[web]'.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("model", type=Path, nargs="?", default=None,
                        help="a model.safetensors written by digitlab train (default: the bundled "
                        "reader, a CNN trained on the full MNIST)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 lets other machines in")
    parser.add_argument("--port", type=int, default=8000, help="TCP port; 0 picks a free one")
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES,
                        help="largest request body accepted (413 beyond)")
    _add_min_confidence(parser)
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes, each with the model loaded once "
                        "(default: the number of cores)")
    parser.set_defaults(handler=_cmd_serve)


RUN_SETTINGS = ("random_state", "validation_fraction")  # model settings the run sets itself


def _add_model_settings(parser: argparse.ArgumentParser) -> None:
    """One ``--setting-name`` option per model setting, named after the Python keyword
    (from the catalog, which tests check equals the models' signatures)."""
    from digitlab.catalog import MODEL_SETTINGS, model_kinds

    by_name: dict[str, list[tuple[str, Any]]] = {}
    for kind in model_kinds():
        for name, default in MODEL_SETTINGS[kind].items():
            # random_state is set by the run's --seed and validation_fraction by the run's own
            # --validation-fraction (the run carves the split); every other setting gets an option
            if name not in RUN_SETTINGS:
                by_name.setdefault(name, []).append((kind, default))
    group = parser.add_argument_group("model settings (used by the models named in each help)")
    for name, uses in sorted(by_name.items()):
        defaults = ", ".join(f"{kind}: {default!r}" for kind, default in uses)
        group.add_argument(
            "--" + name.replace("_", "-"), dest=f"setting_{name}", default=argparse.SUPPRESS,
            type=_setting_type(uses[0][1]), metavar=name.upper(), help=f"default {defaults}",
        )


def _setting_type(default: object) -> Callable[[str], object]:
    if isinstance(default, bool):
        return _parse_bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return _parse_float_or_none
    if isinstance(default, tuple):
        return _parse_tuple
    if default is None:
        return _parse_number_or_text
    return str


def _probability(text: str) -> float:
    """A number from 0 to 1 (not NaN)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def _parse_float_or_none(text: str) -> float | None:
    """A number, or ``none`` for settings such as ``--tol none`` (never stop early)."""
    return None if text.strip().lower() == "none" else float(text)


def _parse_tuple(text: str) -> tuple[object, ...]:
    """``"500"`` -> (500,), ``"25,15"`` -> (25, 15), ``""`` -> ()."""
    return tuple(_parse_number_or_text(part) for part in text.split(",") if part.strip())


def _parse_number_or_text(text: str) -> object:
    """For settings whose default is None: ``none``, a boolean, a number, or text."""
    if text.strip().lower() == "none":
        return None
    if text.strip().lower() in BOOLEAN_WORDS and not text.strip().isdigit():  # 1 is a number here
        return _parse_bool(text)
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


BOOLEAN_WORDS = {"1": True, "true": True, "yes": True, "on": True,
                 "0": False, "false": False, "no": False, "off": False}


def _parse_bool(text: str) -> bool:
    if text.strip().lower() in BOOLEAN_WORDS:
        return BOOLEAN_WORDS[text.strip().lower()]
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_data(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("data", help="inspect and convert datasets")
    sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    info = sub.add_parser("info", help="counts per class and split, shape, dtype, source",
                          formatter_class=_HelpFormatter)
    info.add_argument("source", help=DATA_HELP)
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_data_options(info)
    info.set_defaults(handler=_cmd_data_info)

    convert = sub.add_parser(
        "convert", help="write a source as a PNG tree, .npz or IDX folder",
        description="Write SRC to DEST: a .npz file (Keras keys), or a new folder holding a PNG "
        "tree in the Kaggle layout (--format png) or the four MNIST IDX files (--format idx).",
        formatter_class=_HelpFormatter,
    )
    convert.add_argument("source", help=DATA_HELP)
    convert.add_argument("dest", type=Path, help="destination .npz file or new folder")
    convert.add_argument("--format", choices=("png", "idx", "npz"), default=None,
                         help="output format (default: npz for a .npz DEST, else png)")
    _add_normalise(convert)
    _add_data_options(convert)
    convert.set_defaults(handler=_cmd_data_convert)


def _add_sweep(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from digitlab.catalog import model_kinds  # not the models: --help stays light

    parser = commands.add_parser(
        "sweep", help="train over a grid or random draws of settings and several seeds",
        description="Train one run per setting combination and seed, in parallel on this "
        "machine's cores or on a Dask cluster. results.csv and results.json in --out are "
        "rewritten as each run ends; running again with the same --out skips finished runs. "
        "The best run is chosen on validation accuracy.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--data", default="mnist-sample", help=DATA_HELP)
    parser.add_argument("--model", default="template", choices=sorted(model_kinds()),
                        help="model to train")
    parser.add_argument("--task", default="all",
                        help="'all' digits, 'is-D' (D against the rest) or 'A-vs-B' (only A and B)")
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                        help="values of a setting to try (repeatable; every combination runs); "
                        "separate values by ';' when a value holds commas (hidden=128,64;256)")
    parser.add_argument("--random", action="append", default=[], metavar="NAME=DIST",
                        help="draw a setting at random: log:LOW:HIGH, uniform:LOW:HIGH, "
                        "int:LOW:HIGH or choice:A,B (repeatable; --trials draws, seeded by --seed)")
    parser.add_argument("--trials", type=int, default=10, help="random draws with --random")
    parser.add_argument("--seeds", default=None, metavar="S1,S2",
                        help="seeds of every combination (default: --seed)")
    parser.add_argument("--validation-fraction", type=float, default=None,
                        help="share of the train images held out as the validation split that "
                        "chooses the best run (default: the model's, 0.1)")
    _add_data_options(parser)
    parser.add_argument("--out", type=Path, required=True, help="sweep folder to write into")
    parser.add_argument("--workers", type=int, default=None,
                        help="local processes (default: one per usable core)")
    parser.add_argument("--cluster", default=None, metavar="tcp://HOST:8786",
                        help="run on this Dask scheduler instead (needs the dask extra)")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    _add_model_settings(parser)
    parser.set_defaults(handler=_cmd_sweep)


def _sweep_parse(model: str) -> Callable[[str, str], object]:
    """A sweep value's parser: the type the train option of that setting takes, from the
    model's default (so lr=0.1 is a float, hidden=64 a tuple, early_stopping=yes a bool)."""
    from digitlab.sweep import sweep_settings

    defaults = sweep_settings(model)

    def parse(name: str, text: str) -> object:
        try:
            return _setting_type(defaults[name])(text)
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise SettingsError(f"{name}={text!r}: {exc}") from None

    return parse


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SettingsError(f"--seeds {text!r}: expected integers separated by commas") from None
    if not seeds or any(seed < 0 for seed in seeds):
        raise SettingsError(f"--seeds {text!r}: expected integers >= 0 separated by commas")
    return list(dict.fromkeys(seeds))


def _sweep_engine(args: argparse.Namespace) -> Any:
    if args.cluster is None:
        from digitlab.engines import LocalEngine

        return LocalEngine(args.workers)
    try:
        from digitlab.engines import DaskEngine  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        raise SettingsError("digitlab sweep --cluster needs the dask extra: "
                            "pip install 'digitlab[dask]'") from None
    return DaskEngine(args.cluster)


# ---------------------------------------------------------------- commands


def _cmd_train(args: argparse.Namespace, out: Console, err: Console) -> int:
    from digitlab.drawing import start_drawer

    # Started before the run's imports, so that matplotlib loads on the second core
    # while this process imports scikit-learn and loads the data (see digitlab.drawing).
    with start_drawer(enabled=args.out is not None) as drawer:
        return _train_command(args, out, err, drawer)


def _train_command(args: argparse.Namespace, out: Console, err: Console, drawer: Drawer | None) -> int:
    import dataclasses

    from digitlab.run import RunConfig, load_run_config, train

    settings = {key[len("setting_"):]: value for key, value in vars(args).items()
                if key.startswith("setting_")}
    base = load_run_config(args.config) if args.config is not None else RunConfig()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)
             if getattr(args, f.name, None) is not None}
    if given.get("model", base.model) != base.model:  # another model: the file's settings are not its
        base = dataclasses.replace(base, settings={})
    config = dataclasses.replace(base, **given, settings={**base.settings, **settings})
    with _TrainingDisplay(err, enabled=not args.quiet, verbose=args.verbose) as display:

        def on_stage(name: str) -> None:
            # The run imports its modules as it goes (scikit-learn before training, torch
            # in a CNN's fit): what each stage imported is settled when the next begins.
            _settle_imports()
            display.stage(name)

        result = train(config, args.out, on_stage=on_stage, callback=display.report,
                       target_digit=args.target_digit, worst_digit=args.worst_digit, drawer=drawer)
    if args.quiet:
        return EXIT_OK
    if result.metrics.get("interrupted"):
        err.print("interrupted: kept the best model so far and wrote the outputs", highlight=False)
    for note in result.dataset.notes:
        err.print(f"note: {note}", highlight=False)
    m = result.metrics
    out.print(_metrics_table(f"{config.model} on {result.dataset.name} ({config.task})",
                             {split: m[split] for split in result.dataset.splits}))
    out.print(f"trained in {result.seconds:.2f} s; wrote {args.out}/ (model.safetensors, "
              "metrics.json, config.json, figures/)", highlight=False)
    out.print(f"report: {args.out / 'report.html'}", highlight=False, soft_wrap=True)
    return EXIT_OK


def _settle_imports() -> None:
    """Exempt every object imported so far from garbage collection (``gc.freeze``).

    scikit-learn, SciPy and matplotlib leave about half a million long-lived objects,
    and each full collection the figures' many small objects trigger walked all of
    them: about 0.15 s of a ``train --model majority`` run. Only when this process is
    the command (:func:`entry_point`): a program or test suite calling :func:`main`
    owns its process and its garbage, which a freeze would keep for good.
    """
    if _OWN_PROCESS:
        import gc

        gc.freeze()


def _metrics_table(title: str, evaluation: dict[str, dict[str, Any]]) -> Table:
    """Accuracy always beside its 95% interval, the majority baseline and the balanced accuracy."""
    from digitlab.metrics import format_cost, format_interval

    table = Table(title=title)
    table.add_column("split")
    for column in ("images", "accuracy", "95% interval", "balanced accuracy", "majority baseline",
                   "cross-entropy"):
        table.add_column(column, justify="right")
    for split, figures in evaluation.items():
        baseline = figures.get("majority_baseline")
        table.add_row(split, str(figures["count"]), f"{figures['accuracy']:.2%}",
                      format_interval(figures.get("accuracy_ci")),
                      f"{figures['balanced_accuracy']:.2%}",
                      "" if baseline is None else f"{baseline:.2%}",
                      format_cost(figures["costs"]["cross_entropy"]))
    return table


def _load_model_and_data(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from digitlab.io import load_model
    from digitlab.run import data_for_model

    model, info = load_model(args.model)
    dataset = data_for_model(info, args.data, test_fraction=args.test_fraction, seed=args.seed,
                             label_column=args.label_column, labels=args.labels)
    return model, info, dataset


def _cmd_evaluate(args: argparse.Namespace, out: Console, err: Console) -> int:
    from digitlab.calibration import calibration_of
    from digitlab.inspection import inspect_model
    from digitlab.run import check_known_labels

    model, info, dataset = _load_model_and_data(args)
    if args.start or args.count is not None:
        dataset = dataset.take(args.split, args.start, args.count)
    check_known_labels(dataset, info, args.split)
    inspection = inspect_model(model, dataset, splits=(args.split,), figures=False,
                               calibration=calibration_of(info), target_digit=args.target_digit,
                               worst_digit=args.worst_digit, seed=args.seed)
    if args.json:
        print(json.dumps({"evaluation": inspection.evaluation, "analysis": inspection.analysis},
                         indent=2))
        return EXIT_OK
    span = "" if not (args.start or args.count) else f", images {args.start}..{args.start + len(dataset.labels(args.split)) - 1}"
    out.print(_metrics_table(f"{info.kind} on {args.data} ({args.split}{span})", inspection.evaluation))
    for reading in inspection.readings:
        out.print(reading, highlight=False)
    return EXIT_OK


def _cmd_inspect(args: argparse.Namespace, out: Console, err: Console) -> int:
    from digitlab.atomic import atomic_dir, check_folder_destination, write_json
    from digitlab.calibration import calibration_of
    from digitlab.inspection import inspect_model
    from digitlab.report import write_report
    from digitlab.run import check_known_labels

    check_folder_destination(args.out, merge=True)  # before the work, not after it
    model, info, dataset = _load_model_and_data(args)
    for split in ("train", "test"):
        check_known_labels(dataset, info, split)
    inspection = inspect_model(model, dataset, calibration=calibration_of(info),
                               target_digit=args.target_digit, worst_digit=args.worst_digit,
                               seed=args.seed)
    with atomic_dir(args.out, merge=True) as folder:
        write_json(folder / "metrics.json", {**inspection.evaluation, "analysis": inspection.analysis,
                                             "model": info.kind, "data": dataset.summary()})
        write_report(folder, title=f"{info.kind} on {args.data}", data_summary=dataset.summary(),
                     model_summary=model.summary(), inspection=inspection)
    out.print(_metrics_table(f"{info.kind} on {args.data}", inspection.evaluation))
    out.print(f"report: {args.out / 'report.html'}", highlight=False, soft_wrap=True)
    return EXIT_OK


def _cmd_predict(args: argparse.Namespace, out: Console, err: Console) -> int:
    from digitlab.atomic import atomic_file, check_writable_location
    from digitlab.io import load_model
    from digitlab.predict import predict_images

    if args.output is not None:  # checked before any picture is read
        if not (args.csv or args.json):
            raise SettingsError("--output needs --csv or --json")
        if args.output.is_dir():
            raise OutputError(args.output, "is a folder; name a file to write")
        check_writable_location(args.output)
    explain_dir = _explain_dir(args)  # checked before any picture is read, too
    if args.show_input is not None:
        if args.show_input.exists() and not args.show_input.is_dir():
            raise OutputError(args.show_input, "is not a folder; name a folder for --show-input")
        check_writable_location(args.show_input / "digit.input.png")
    model_path, images = _model_and_images(args.model, args.images)
    model, info = load_model(model_path)
    skipped: list[DigitlabError] = []

    def skip(exc: DigitlabError) -> None:
        skipped.append(exc)
        err.print(f"digitlab: skipped {one_line(str(exc))}", highlight=False, soft_wrap=True)

    predictions = predict_images(model, info, images, raw=args.raw,
                                 on_error=skip if args.on_error == "skip" else "stop",
                                 min_confidence=args.min_confidence)
    if skipped:
        err.print(f"digitlab: skipped {len(skipped)} of {len(skipped) + len(predictions)} files",
                  highlight=False)
    if not predictions:
        raise DigitlabError(f"none of the {len(skipped)} pictures could be read")
    code = EXIT_SKIPPED if skipped else EXIT_OK
    if args.show_input is not None:
        from digitlab.predict import write_inputs

        write_inputs(args.show_input, predictions)
    maps = _explain_predictions(model, predictions, explain_dir) if args.explain else {}
    if args.json or args.csv:
        text = (_predictions_csv(predictions, info) if args.csv else json.dumps(
            [{"path": p.path, "label": p.label, "name": p.name,
              "probabilities": p.probabilities, **maps.get(i, {})}
             for i, p in enumerate(predictions)], indent=2) + "\n")
        if args.output is None:
            sys.stdout.write(text)
        else:
            with atomic_file(args.output) as tmp:
                tmp.write_text(text, encoding="utf-8")
        return code
    import numpy as np  # here, not at the top: --help starts without NumPy (0.1 s)

    table = Table(title=f"{info.kind} predictions (--json for every probability)")
    table.add_column("image", overflow="fold")
    table.add_column("label", justify="right")
    table.add_column("probability", justify="right")
    table.add_column("next best", justify="right")
    for p in predictions:
        first, second = np.argsort(p.probabilities)[::-1][:2]
        table.add_row(one_line(p.path), p.name, f"{p.probabilities[first]:.2f}",
                      f"{info.name_of(int(info.classes[second]))} {p.probabilities[second]:.2f}")
    out.print(table)
    if explain_dir is not None:
        out.print(f"explanations: {explain_dir}", highlight=False, soft_wrap=True)
    if args.show_input is not None:
        out.print(f"images the model saw: {show_path(args.show_input)}", highlight=False,
                  soft_wrap=True)
    return code


def _model_and_images(first: Path, images: list[str]) -> tuple[Path, list[str | os.PathLike[str]]]:
    """``predict [MODEL] IMAGES``: the model file and the pictures. The first argument is
    a picture (and the bundled reader reads it) when it is a folder or has an image suffix."""
    from digitlab.bundled import pretrained_path
    from digitlab.predict import IMAGE_SUFFIXES

    if first.is_dir() or first.suffix.lower() in IMAGE_SUFFIXES:
        return pretrained_path(), [first, *images]
    if not images:
        raise SettingsError(f"no images to read after the model {first}")
    return first, list(images)


def _explain_dir(args: argparse.Namespace) -> Path | None:
    """Where ``predict --explain`` writes its PNGs (None: no PNGs), checked writable.

    With --json the maps go into the records, so PNGs only when --explain-dir asks.
    """
    from digitlab.atomic import check_writable_location

    if args.explain_dir is not None and not args.explain:
        raise SettingsError("--explain-dir needs --explain")
    if not args.explain or (args.json and args.explain_dir is None):
        return None
    folder = args.explain_dir or (args.output.parent if args.output is not None else Path())
    if folder.exists() and not folder.is_dir():
        raise OutputError(folder, "is not a folder; name a folder for the --explain PNGs")
    check_writable_location(folder / "digit.explain.png")
    return folder


def _explain_predictions(model: Any, predictions: list[Any], folder: Path | None) -> dict[int, dict[str, Any]]:
    """Explain every prediction; write the PNGs into ``folder`` (unless None). Returns
    each answer's extra JSON fields by position: the method, the map, the PNG."""
    from digitlab.explain import explain_predictions, map_as_lists, write_explanations

    explanations = explain_predictions(model, predictions)
    written = write_explanations(folder, explanations) if folder is not None else []
    return {i: {"explanation": {"method": e.method, "map": map_as_lists(e.map),
                                **({"png": str(written[i])} if written else {})}}
            for i, e in enumerate(explanations)}


def _predictions_csv(predictions: list[Any], info: Any) -> str:
    """One row per picture: path, label, name, confidence (the label's probability), then
    one p_<class name> column per class, in the model's order of classes."""
    import csv
    import io

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "label", "name", "confidence",
                     *(f"p_{info.name_of(int(label))}" for label in info.classes)])
    for p in predictions:
        writer.writerow([p.path, p.label, p.name, max(p.probabilities), *p.probabilities])
    return text.getvalue()


# What the web extra installs: a missing one means the extra is missing, not a bug of ours.
WEB_MODULES = {"fastapi", "starlette", "uvicorn", "python_multipart", "pydantic"}


def _cmd_serve(args: argparse.Namespace, out: Console, err: Console) -> int:
    try:
        from digitlab.web.app import create_app
        from digitlab.web.server import listen, run, run_workers, url_of
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in WEB_MODULES:
            raise
        raise DigitlabError(f"digitlab serve needs the web extra ({exc.name} is missing): "
                            "pip install 'digitlab[web]'") from None
    workers = _serve_workers(args.workers)
    if args.model is None:
        from digitlab.bundled import pretrained_path

        args.model = pretrained_path()
    with warnings.catch_warnings(record=True) as caught:  # shown now: serving never returns
        warnings.simplefilter("always", DataWarning)
        app = create_app(args.model, max_body_bytes=args.max_body_bytes,  # the model, loaded once
                         min_confidence=args.min_confidence)
    _report(caught, err)
    sock = listen(args.host, args.port, shared=workers > 1)

    def serving() -> None:
        # One line on stdout with the real address (--port 0 picks one); flushed, for scripts.
        out.print(f"digitlab: serving {args.model} at {url_of(sock)} (Ctrl-C stops)",
                  highlight=False, soft_wrap=True)
        out.file.flush()

    if workers == 1:
        serving()
        run(app, sock)
        return EXIT_OK
    del app  # checked above (errors and warnings once, here); each worker loads its own
    from functools import partial

    run_workers(partial(create_app, args.model, max_body_bytes=args.max_body_bytes,
                        min_confidence=args.min_confidence), sock, workers, ready=serving)
    return EXIT_OK


def _serve_workers(workers: int | None) -> int:
    """``serve --workers``: the number given (at least 1), by default one per usable core."""
    if workers is None:
        from digitlab.engines import usable_cores

        return usable_cores()
    if workers < 1:
        raise SettingsError(f"--workers must be at least 1, got {workers}")
    return workers


def _cmd_export(args: argparse.Namespace, out: Console, err: Console) -> int:
    from digitlab.export import export_onnx

    exported = export_onnx(args.model, args.onnx)
    out.print(f"wrote {show_path(exported.path)} ({exported.kind} model as ONNX, "
              f"{exported.n_bytes:,} bytes)", highlight=False, soft_wrap=True)
    return EXIT_OK


def _cmd_lab(args: argparse.Namespace, out: Console, err: Console) -> int:
    from digitlab.lab import run_lab
    from digitlab.metrics import format_interval

    def report(text: str) -> None:
        if not args.quiet:
            err.print(text, highlight=False)

    if args.seeds is not None:
        return _lab_seeds(args, out, report)
    results = run_lab(args.recipes, args.out, report=report)
    if args.quiet:
        return EXIT_OK
    table = Table(title="digitlab lab")
    table.add_column("recipe", no_wrap=True)
    table.add_column("variant", no_wrap=True)
    table.add_column("model", overflow="fold")
    for column in ("test acc.", "95% interval", "baseline", "balanced", "s"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("the exercise's figure", overflow="fold")
    for r in results:
        table.add_row(r.recipe, r.variant, r.title, f"{r.test_accuracy:.1%}",
                      format_interval(r.test_accuracy_ci), f"{r.majority_baseline:.1%}",
                      f"{r.balanced_accuracy:.1%}", f"{r.seconds:.1f}", r.reproduces)
    out.print(table)
    out.print(f"report: {args.out / 'report.html'}", highlight=False, soft_wrap=True)
    return EXIT_OK


def _cmd_sweep(args: argparse.Namespace, out: Console, err: Console) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from digitlab.atomic import check_folder_destination
    from digitlab.run import RunConfig
    from digitlab.sweep import (
        parse_grid,
        parse_random,
        plan_sweep,
        run_sweep,
        sweep_points,
        write_sweep_report,
    )

    # every mistake is found here, before any run starts
    parse = _sweep_parse(args.model)
    grid = parse_grid(args.grid, args.model, parse)
    draws = parse_random(args.random, args.model, parse)
    seeds = _parse_seeds(args.seeds) if args.seeds is not None else [args.seed]
    settings = {key[len("setting_"):]: value for key, value in vars(args).items()
                if key.startswith("setting_")}
    base = RunConfig(data=args.data, model=args.model, task=args.task, seed=seeds[0],
                     test_fraction=args.test_fraction, validation_fraction=args.validation_fraction,
                     label_column=args.label_column, labels=args.labels, settings=settings)
    configs = plan_sweep(base, sweep_points(grid, draws, args.trials, args.seed), seeds)
    check_folder_destination(args.out, merge=True)
    engine = _sweep_engine(args)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("best (validation) {task.fields[best]}"), TimeRemainingColumn(),
                   console=err, disable=args.quiet or not err.is_terminal, transient=True)
    task = bar.add_task(f"sweep on {engine.where}", total=None, best="-")

    def started(to_run: int, skipped: int) -> None:
        bar.update(task, total=to_run)
        if skipped and not args.quiet:
            err.print(f"{skipped} runs already finished in {show_path(args.out)}: skipped",
                      highlight=False, soft_wrap=True)

    def finished(row: dict[str, Any], best: dict[str, Any] | None) -> None:
        bar.update(task, advance=1, best=f"{best['validation_accuracy']:.2%}" if best else "-")
        if not args.quiet and not err.is_terminal:  # a log gets one line a run
            err.print(f"run {row['run_id']} {row['status']}"
                      + (f": validation {row['validation_accuracy']:.2%}" if row["validation_accuracy"] is not None
                         else f": {row['error']}" if row["error"] else ""), highlight=False, soft_wrap=True)

    try:
        with bar:
            result = run_sweep(configs, args.out, engine, base=base, on_start=started, on_run=finished)
    finally:
        engine.close()
    report = write_sweep_report(result, title=f"digitlab sweep: {args.model} on {args.data} ({args.task})")
    for message in sorted({w for row in result.rows for w in row.get("warnings") or []}):
        err.print(f"digitlab: warning: {one_line(message)}", highlight=False, soft_wrap=True)
    failed = [row for row in result.rows if row["status"] != "ok"]
    if args.quiet:
        return EXIT_ERROR if failed else EXIT_OK
    out.print(_sweep_table(result.rows, result.best))
    if result.best is not None:
        out.print(f"best on validation: run {result.best['run_id']} "
                  f"({result.best['validation_accuracy']:.2%}); its model: "
                  f"{show_path(args.out / 'runs' / result.best['run_id'] / 'model.safetensors')}",
                  highlight=False, soft_wrap=True)
    if failed:
        err.print(f"{len(failed)} runs failed (see the error column); run again to retry them",
                  highlight=False)
    out.print(f"wrote {show_path(args.out)}/ (results.csv, results.json, runs/); "
              f"report: {show_path(report)}", highlight=False, soft_wrap=True)
    return EXIT_ERROR if failed else EXIT_OK


def _sweep_table(rows: list[dict[str, Any]], best: dict[str, Any] | None) -> Table:
    table = Table(title="digitlab sweep (best on validation marked *)")
    for column in ("run", "settings", "seed", "status"):
        table.add_column(column, overflow="fold")
    for column in ("train", "validation", "test", "balanced", "s"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("where / error", overflow="fold")

    def pct(value: float | None) -> str:
        return "" if value is None else f"{value:.1%}"

    for row in rows:
        mark = "*" if best is not None and row["run_id"] == best["run_id"] else ""
        settings = " ".join(f"{k}={json.dumps(v)}" for k, v in row.get("settings", {}).items())
        table.add_row(row["run_id"] + mark, settings, str(row["seed"]), row["status"],
                      pct(row.get("train_accuracy")), pct(row.get("validation_accuracy")),
                      pct(row.get("test_accuracy")), pct(row.get("balanced_accuracy")),
                      "" if row.get("seconds") is None else f"{row['seconds']:.1f}",
                      row.get("error") or row.get("where") or "")
    return table


def _lab_seeds(args: argparse.Namespace, out: Console, report: Callable[[str], None]) -> int:
    from digitlab.lab import run_lab_seeds

    seeds = _parse_seeds(args.seeds)
    engine = _sweep_engine(args)
    try:
        rows = run_lab_seeds(args.recipes, seeds, args.out, engine, report=report)
    finally:
        engine.close()
    if args.quiet:
        return EXIT_OK
    table = Table(title=f"digitlab lab over seeds {', '.join(map(str, seeds))} (mean ± sd)")
    for column in ("recipe", "variant", "model"):
        table.add_column(column, overflow="fold")
    for column in ("test acc.", "baseline", "balanced", "s"):
        table.add_column(column, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(r["recipe"], r["variant"], r["title"],
                      *(f"{r[key]['mean']:.1%} ± {r[key]['std']:.1%}"
                        for key in ("test_accuracy", "majority_baseline", "balanced_accuracy")),
                      f"{r['seconds']['mean']:.1f}")
    out.print(table)
    out.print(f"wrote {show_path(args.out / 'seeds.json')}; each seed's report: "
              f"{show_path(args.out)}/seed-N/report.html", highlight=False, soft_wrap=True)
    return EXIT_OK


def _cmd_data_info(args: argparse.Namespace, out: Console, err: Console) -> int:
    dataset = _load(args)
    summary = dataset.summary()
    summary["source"] = str(args.source)
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    h, w = dataset.image_shape
    out.print(Text(one_line(args.source), style="bold"), f": {h}x{w} {summary['dtype']} images, "
              f"{len(dataset.classes)} classes", sep="", highlight=False)
    table = Table()
    table.add_column("class")
    for split in ("train", "test"):
        table.add_column(split, justify="right")
    train_counts, test_counts = dataset.counts("train"), dataset.counts("test")
    for label in dataset.classes.tolist():
        name = dataset.class_name(label)
        table.add_row(f"{label} {name}" if name != str(label) else name,
                      str(train_counts.get(label, 0)), str(test_counts.get(label, 0)))
    table.add_row(Text("all", style="bold"), str(len(dataset.train_labels)), str(len(dataset.test_labels)))
    out.print(table)
    for note in dataset.notes:
        out.print(f"note: {note}", highlight=False)
    return EXIT_OK


def _cmd_data_convert(args: argparse.Namespace, out: Console, err: Console) -> int:
    from digitlab.atomic import check_folder_destination, check_writable_location
    from digitlab.data import formats, imagetree

    fmt = args.format or ("npz" if args.dest.suffix.lower() == ".npz" else "png")
    # Where the output goes is checked before the (maybe long) load, not after it.
    if fmt == "npz":
        if args.dest.exists() or args.dest.is_symlink():
            raise OutputError(args.dest, "already exists; choose a new destination")
        check_writable_location(args.dest)
    else:
        check_folder_destination(args.dest)
    dataset = _load(args)
    splits = {split: (dataset.images(split), dataset.labels(split)) for split in ("train", "test")}
    if fmt == "npz":
        formats.write_npz(args.dest, splits)
    elif fmt == "idx":
        formats.write_idx_folder(args.dest, splits)
    else:
        imagetree.write_image_tree(args.dest, splits)
    out.print(f"wrote {args.dest} ({fmt}: {len(dataset.train_labels)} train, "
              f"{len(dataset.test_labels)} test images)", highlight=False)
    return EXIT_OK


def _load(args: argparse.Namespace) -> Any:
    from digitlab.data.sources import load

    return load(args.source, test_fraction=args.test_fraction, seed=args.seed,
                label_column=args.label_column, labels=args.labels,
                normalise=getattr(args, "normalise", False))


class _TrainingDisplay:
    """Stages and a model's progress reports as one progress bar, as Keras shows them."""

    def __init__(self, console: Console, *, enabled: bool, verbose: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )  # fmt: skip

        self.console, self.verbose = console, verbose
        # A live bar on a terminal; in a log (CI, a pipe) one plain line per epoch instead.
        self.lines = enabled and not console.is_terminal
        self.bar = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[logs]}"),
            console=console, disable=not enabled or self.lines, transient=True,
        )
        self.task = self.bar.add_task("starting", total=None, logs="")

    def __enter__(self) -> _TrainingDisplay:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def stage(self, name: str) -> None:
        self.bar.update(self.task, description=name)

    def report(self, progress: Any) -> None:
        logs = "  ".join(f"{key} {value:.3g}" for key, value in progress.logs.items())
        if progress.stage == "best":
            if self.verbose:
                self.console.print(f"new best at {progress.step}: {logs}", highlight=False)
            return
        if self.lines:
            self.console.print(f"{progress.stage} {progress.step}/{progress.total}  {logs}",
                               highlight=False)
            return
        self.bar.update(self.task, description=progress.stage, total=progress.total,
                        completed=progress.step, logs=logs)


# ---------------------------------------------------------------- entry points

# Width of output that is not a terminal, or a notebook's `!digitlab ...`: rich would
# assume 80 columns and fold each table row into fragments; a pipe, a file or a notebook
# cell has no width of its own (tables still take only the width they need).
UNBOUNDED_WIDTH = 200


def _console(*, stderr: bool) -> Console:
    """A Console for stdout or stderr: markup and emoji codes off, as wide as the output
    can take (the terminal's width; UNBOUNDED_WIDTH when not a terminal, unless COLUMNS)."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = getattr(stream, "isatty", lambda: False)()
    # A notebook runs `!cmd` in an 80-column pseudo-terminal of its own; its cell wraps lines.
    notebook = "JPY_PARENT_PID" in os.environ
    wide = (notebook or not terminal) and "COLUMNS" not in os.environ
    # No markup, no emoji codes: what we print holds file and class names, and "[/x]" or
    # ":smile:" in one is part of the name.
    return Console(stderr=stderr, markup=False, emoji=False, width=UNBOUNDED_WIDTH if wide else None)



def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors exit through argparse
        return int(exc.code or 0)
    out, err = _console(stderr=False), _console(stderr=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        try:
            code = int(args.handler(args, out, err))
        except (DigitlabError, OSError) as exc:
            # An OSError that reaches here is the machine's answer (a file vanished, a read
            # failed), not a bug: one line naming the file, like digitlab's own errors.
            _report(caught, err)
            err.print(f"digitlab: error: {one_line(_describe(exc))}", highlight=False,
                      markup=False, soft_wrap=True)
            return EXIT_USAGE
        except MemoryError:
            # Readers refuse what would not fit (DataError); this is a real job too big.
            _report(caught, err)
            err.print("digitlab: error: out of memory: the data or the model is too large for "
                      "this machine", highlight=False, soft_wrap=True)
            return EXIT_USAGE
        except KeyboardInterrupt:
            err.print("digitlab: interrupted", highlight=False)
            return 130
    _report(caught, err)
    return code


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, DigitlabError):
        where = exc.filename if exc.filename is not None else ""
        return f"{show_path(where)}: {exc.strerror or exc}" if where else str(exc)
    return str(exc)


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped: a message stays one
    line whatever a file name holds (messages quote paths; this is the last guard)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _report(caught: list[warnings.WarningMessage], err: Console) -> None:
    for warning in caught:
        if issubclass(warning.category, DataWarning):
            err.print(f"digitlab: warning: {one_line(str(warning.message))}", highlight=False,
                      markup=False, soft_wrap=True)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)


_OWN_PROCESS = False  # set by entry_point: the process runs the command and nothing else


def entry_point() -> None:
    """The installed ``digitlab`` script."""
    global _OWN_PROCESS
    _OWN_PROCESS = True
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `digitlab ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    sys.exit(code)


if __name__ == "__main__":
    entry_point()
