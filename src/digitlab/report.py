"""One self-contained HTML report per run: data, model, metrics, figures.

The page embeds every figure as a base64 PNG and its own CSS, so it opens
anywhere with no network and can be mailed as one file. The same figures
are also written as PNG files under ``figures/``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitlab import __version__
from digitlab.atomic import atomic_file
from digitlab.display import html_table
from digitlab.drawing import Recipe, plotting
from digitlab.inspection import Figures, Inspection
from digitlab.metrics import format_cost, format_interval

if TYPE_CHECKING:
    from digitlab.drawing import Drawer


def png_bytes(figure: Any) -> bytes:
    """The PNG of a Figure or a recipe (:func:`digitlab.plots.png_of`), importing
    matplotlib only when a figure is drawn here."""
    png: bytes = plotting().png_of(figure)
    return png

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.95em; }
.reading { background: #f7f9fc; border-left: 4px solid #2e86c1; padding: 0.5em 1em; }
.muted { color: #777; font-size: 0.9em; }
"""


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def render_html(
    *,
    title: str,
    data_summary: dict[str, Any],
    model_summary: dict[str, Any],
    inspection: Inspection,
    extra_sections: list[tuple[str, str]] | None = None,
    pngs: dict[str, bytes] | None = None,
) -> str:
    """The report page as a string; ``extra_sections`` are ``(heading, html)`` pairs.

    ``pngs`` holds already rendered figures by name, so none is rendered twice.
    """
    pngs = pngs or {}
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class='muted'>digitlab {html.escape(__version__)}</p>"]

    parts.append("<h2 id='data'>Data</h2>")
    h, w = data_summary["image_shape"]
    splits = data_summary["splits"]
    parts.append(
        f"<p>{html.escape(str(data_summary['name']))}: {h}x{w} "
        f"{html.escape(str(data_summary['dtype']))} images, task "
        f"<b>{html.escape(str(data_summary['task']))}</b>.</p>"
    )
    names = data_summary["classes"]
    labels = sorted({int(k) for s in splits.values() for k in s["per_class"]})
    rows = [[names[label] if label < len(names) else label,
             *(split["per_class"].get(label, 0) for split in splits.values())]
            for label in labels]
    rows.append(["all", *(split["count"] for split in splits.values())])
    parts.append(html_table(["class", *splits], rows))
    for note in data_summary.get("notes", []):
        parts.append(f"<p class='muted'>note: {html.escape(note)}</p>")

    parts.append("<h2 id='model'>Model</h2>")
    parts.append(f"<p><b>{html.escape(str(model_summary['kind']))}</b>, settings "
                 f"<code>{html.escape(str(model_summary.get('settings', {})))}</code></p>")
    layers = model_summary.get("layers")
    if layers:
        parts.append(html_table(["layer", "weights", "bias", "parameters"],
                            [[layer.get("name", i), layer.get("weight_shape", ""),
                              layer.get("bias_shape", ""), f"{layer.get('n_parameters', 0):,}"]
                             for i, layer in enumerate(layers)]))
    else:
        parts.append(html_table(["array", "shape"], [[name, "x".join(map(str, shape)) or "scalar"]
                                                   for name, shape in model_summary.get("parameters", {}).items()]))
    parts.append(f"<p>{html.escape(describe_parameters(model_summary))}</p>")

    parts.append("<h2 id='metrics'>Metrics</h2>")
    rows = []
    for split, figures in inspection.evaluation.items():
        costs = figures.get("costs", {})
        rows.append([split, figures["count"], _pct(figures["accuracy"]),
                     format_interval(figures.get("accuracy_ci")),
                     _pct(figures["balanced_accuracy"]), _pct(figures.get("majority_baseline")),
                     format_cost(costs.get("cross_entropy")),
                     format_cost(costs.get("brier_score"))])
    parts.append(html_table(["split", "images", "accuracy", "95% interval", "balanced accuracy",
                         "majority baseline", "cross-entropy", "Brier score"], rows))
    parts.append("<p class='muted'>The 95% interval (Wilson) is where the accuracy on unseen "
                 "images of the same kind lies, given how few were tested: two accuracies whose "
                 "intervals overlap much are not told apart.</p>")
    last = list(inspection.evaluation.values())[-1]
    parts.append(html_table(["class", "precision", "recall", "F1", "support"],
                        [[names[int(k)] if int(k) < len(names) else k, f"{v['precision']:.3f}",
                          f"{v['recall']:.3f}", f"{v['f1']:.3f}", v["support"]]
                         for k, v in last["per_class"].items()]))

    parts.extend(_calibration_section(inspection))

    parts.append("<h2 id='reading'>Reading</h2>")
    parts.extend(f"<p class='reading'>{html.escape(text)}</p>" for text in inspection.readings)

    parts.append("<h2 id='figures'>Figures</h2>")
    for name, caption, figure in inspection.figures.entries:
        png = pngs[name] if name in pngs else png_bytes(figure)
        encoded = base64.b64encode(png).decode("ascii")
        parts.append(f"<figure id='fig-{html.escape(name)}'><img alt='{html.escape(caption)}' "
                     f"src='data:image/png;base64,{encoded}'><figcaption>{html.escape(caption)}"
                     "</figcaption></figure>")
    for heading, body in extra_sections or []:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")

    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def describe_parameters(model_summary: dict[str, Any]) -> str:
    """What the parameter count counts: "785 learned parameters (coef_ 784, intercept_ 1);
    also stored, not learned: best_candidate_, best_train_accuracy_" or, for the random
    baseline, "no learned parameters (a seed: 1)"."""
    total = int(model_summary.get("n_parameters", 0))
    sizes = {name: math.prod(shape) for name, shape in model_summary.get("parameters", {}).items()}
    records = model_summary.get("stored") or {}
    if total == 0:
        text = "No learned parameters"
        if set(records) == {"seed_"}:
            return f"{text} (a seed: {records['seed_']})."
    else:
        text = f"{total:,} learned parameters"
        if 1 < len(sizes) <= 4:
            text += " (" + ", ".join(f"{name} {size:,}" for name, size in sizes.items()) + ")"
    if records:
        text += "; also stored, not learned: " + ", ".join(records)
    return text + "."


def _calibration_section(inspection: Inspection) -> list[str]:
    """The expected calibration error (15 bins) before and after the model's temperature:
    where it was fitted (validation) and on each evaluated split."""
    rows = []
    fitted = inspection.calibration
    if fitted is not None:
        rows.append(["validation (fitted here)", fitted.n, f"{fitted.temperature:.3f}",
                     f"{fitted.ece_before:.4f}", f"{fitted.ece_after:.4f}", "", ""])
    for split, figures in inspection.evaluation.items():
        c = figures.get("calibration")
        if c:
            rows.append([split, figures["count"], f"{c['temperature']:.3f}", f"{c['ece_before']:.4f}",
                         f"{c['ece_after']:.4f}", _pct(c["mean_confidence_before"]),
                         _pct(c["mean_confidence_after"])])
    if not rows:
        return []
    note = ("The temperature divides the log-probabilities; it was fitted on the validation "
            "split, never on test, and does not change any prediction."
            if fitted is not None else "No temperature was fitted (no validation split).")
    return ["<h3 id='calibration'>Calibration</h3>",
            f"<p>Expected calibration error (15 equal-width confidence bins). {html.escape(note)}</p>",
            html_table(["split", "images", "temperature", "ECE before", "ECE after",
                    "mean confidence before", "mean confidence after"], rows)]


def write_report(
    out: str | os.PathLike[str],
    *,
    title: str,
    data_summary: dict[str, Any],
    model_summary: dict[str, Any],
    inspection: Inspection,
    drawer: Drawer | None = None,
) -> Path:
    """Write ``figures/*.png`` and ``report.html`` into ``out``; return the report's path.

    ``drawer``: a drawing process (:func:`digitlab.drawing.start_drawer`) for the figures
    given as recipes; the others, and all of them without one, are drawn here.
    """
    out = Path(out)
    pngs = draw_figures(inspection.figures, drawer)
    for name, png in pngs.items():
        with atomic_file(out / "figures" / f"{name}.png") as tmp:
            tmp.write_bytes(png)
    page = render_html(title=title, data_summary=data_summary, model_summary=model_summary,
                       inspection=inspection, pngs=pngs)
    path = out / "report.html"
    with atomic_file(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def draw_figures(figures: Figures, drawer: Drawer | None = None) -> dict[str, bytes]:
    """The PNG of each figure, by name: the recipes by ``drawer`` when there is one
    (should it fail, here), the rest here on both cores."""
    pngs: dict[str, bytes] = {}
    entries = figures.entries
    recipes = figures.recipes()
    if drawer is not None and recipes:
        drawn = drawer.draw(recipes)
        if drawn is not None:
            pngs.update(zip([name for name, _, f in entries if isinstance(f, Recipe)], drawn, strict=True))
    rest = [(name, figure) for name, _, figure in entries if name not in pngs]
    if rest:
        drawn_here = plotting().png_bytes_all([f for _, f in rest])
        pngs.update(zip([name for name, _ in rest], drawn_here, strict=True))
    return {name: pngs[name] for name, _, _ in entries}


def write_lab_report(out: str | os.PathLike[str], recipes: list[Any], results: list[Any]) -> Path:
    """The lab's comparison page: one table row per recipe and variant, then each
    recipe's lesson and figures. Figures are also written under ``<recipe>/figures``."""
    out = Path(out)
    parts = ["<h1>digitlab lab: the classic exercises, faithful and fixed</h1>",
             f"<p class='muted'>digitlab {html.escape(__version__)}</p>", "<h2 id='summary'>Summary</h2>"]
    parts.append(html_table(
        ["recipe", "variant", "what", "data", "model", "test accuracy", "95% interval",
         "majority baseline", "balanced accuracy", "seconds", "the exercise's figure"],
        [[r.recipe, r.variant, r.title, r.data, r.model, _pct(r.test_accuracy),
          format_interval(r.test_accuracy_ci), _pct(r.majority_baseline), _pct(r.balanced_accuracy),
          f"{r.seconds:.2f}", r.reproduces] for r in results],
    ))
    for recipe in recipes:
        parts.append(f"<h2 id='{html.escape(recipe.name)}'>{html.escape(recipe.title)}</h2>")
        parts.append(f"<p class='reading'>{html.escape(recipe.lesson)}</p>")
        for result in (r for r in results if r.recipe == recipe.name):
            details = ", ".join(f"{k}: {format_cost(v) if isinstance(v, float) else v}"
                                for k, v in result.extra.items() if not isinstance(v, (list, dict)))
            if "larger_split_ci" in result.extra:  # the split a fixed variant is compared on
                details += f" ({format_interval(result.extra['larger_split_ci'])})"
            parts.append(f"<h3>{html.escape(result.variant)}: {html.escape(result.title)}</h3>"
                         f"<p>test accuracy {_pct(result.test_accuracy)} (95% interval "
                         f"{format_interval(result.test_accuracy_ci)}; majority baseline "
                         f"{_pct(result.majority_baseline)}, balanced {_pct(result.balanced_accuracy)})"
                         f"{'; ' + html.escape(details) if details else ''}</p>")
            for name, caption, figure in result.figures:
                png = png_bytes(figure)
                with atomic_file(out / recipe.name / "figures" / f"{result.variant}-{name}.png") as tmp:
                    tmp.write_bytes(png)
                encoded = base64.b64encode(png).decode("ascii")
                parts.append(f"<figure id='fig-{html.escape(recipe.name)}-{html.escape(result.variant)}-"
                             f"{html.escape(name)}'><img alt='{html.escape(caption)}' "
                             f"src='data:image/png;base64,{encoded}'><figcaption>"
                             f"{html.escape(caption)}</figcaption></figure>")
    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>digitlab lab"
            f"</title><style>{CSS}</style></head><body>" + "\n".join(parts) + "</body></html>\n")
    path = out / "report.html"
    with atomic_file(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def write_sweep_page(
    out: str | os.PathLike[str],
    *,
    title: str,
    rows: list[dict[str, Any]],
    best: dict[str, Any] | None,
    summary: dict[str, list[dict[str, Any]]],
    figures: list[tuple[str, str, Any]],
) -> Path:
    """A sweep's ``report.html`` (figures also under ``figures/``): the best run, chosen on
    validation accuracy, with a link to its folder; accuracy against each setting; the
    learning curves; every run's row."""
    out = Path(out)
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p class='muted'>digitlab {html.escape(__version__)}; "
             f"{len(rows)} runs, {sum(r.get('status') == 'ok' for r in rows)} ok</p>", "<h2>Best run</h2>"]
    if best is None:
        parts.append("<p>No run finished with a validation split, so none is chosen: the test "
                     "split chooses nothing.</p>")
    else:
        folder = f"runs/{best['run_id']}/"
        parts.append(
            f"<p class='reading'>Chosen on validation accuracy ({_pct(best['validation_accuracy'])}); "
            f"its test accuracy {_pct(best['test_accuracy'])} was not looked at to choose it. "
            f"Settings {html.escape(json.dumps(best.get('settings', {})))}, seed {best['seed']}. "
            f"Its folder: <a href='{html.escape(folder)}'>{html.escape(folder)}</a> "
            f"(<a href='{html.escape(folder)}report.html'>its report</a>; "
            f"<code>digitlab predict {html.escape(folder)}model.safetensors IMAGE</code> and "
            f"<code>digitlab serve {html.escape(folder)}model.safetensors</code> use its model).</p>")
    for name, entries in summary.items():
        parts.append(f"<h2 id='setting-{html.escape(name)}'>{html.escape(name)}</h2>")
        parts.append(html_table(
            [name, "runs", "validation mean", "validation sd", "test mean", "test sd"],
            [[json.dumps(e["value"]), e["runs"], _pct(e["validation_mean"]), _pct(e["validation_std"]),
              _pct(e["test_mean"]), _pct(e["test_std"])] for e in entries]))
    for name, caption, figure in figures:
        png = png_bytes(figure)
        with atomic_file(out / "figures" / f"{name}.png") as tmp:
            tmp.write_bytes(png)
        encoded = base64.b64encode(png).decode("ascii")
        parts.append(f"<figure id='fig-{html.escape(name)}'><img alt='{html.escape(caption)}' "
                     f"src='data:image/png;base64,{encoded}'><figcaption>{html.escape(caption)}"
                     "</figcaption></figure>")
    parts.append("<h2>Every run</h2>")
    parts.append(html_table(
        ["run", "settings", "seed", "status", "train", "validation", "test", "balanced (test)",
         "seconds", "where", "error"],
        [[r["run_id"], json.dumps(r.get("settings", {})), r.get("seed"), r.get("status"),
          _pct(r.get("train_accuracy")), _pct(r.get("validation_accuracy")), _pct(r.get("test_accuracy")),
          _pct(r.get("balanced_accuracy")), f"{r['seconds']:.1f}" if r.get("seconds") is not None else "",
          r.get("where") or "", r.get("error") or ""] for r in rows]))
    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>"
            f"{html.escape(title)}</title><style>{CSS}</style></head><body>" + "\n".join(parts)
            + "</body></html>\n")
    path = out / "report.html"
    with atomic_file(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
