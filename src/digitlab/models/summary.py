"""A model's summary: a dict (JSON-ready, as run files and reports store it) that
prints as a Keras-like table and shows itself as one in Jupyter.

Keys: ``kind``, ``settings``, ``classes``, ``layers`` (one dict per row:
``name``, ``type``, ``output_shape``, ``n_parameters``, and per model more),
``parameters`` (every learned array's shape by name), ``n_parameters`` (the
learned parameters: weights, biases, a fitted temperature), and ``stored``
(arrays the model file keeps that are not learned parameters: a seed, which
candidate won, its training accuracy).
"""

from __future__ import annotations

import html
from typing import Any


def _shape(shape: Any) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


class ModelSummary(dict[str, Any]):
    """The summary dict of :meth:`DigitClassifier.summary`, printed as a table.

    ``summary["n_parameters"]`` and every other key work as on a dict;
    ``to_dict()`` gives a plain dict.
    """

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of the same content."""
        return dict(self)

    def rows(self) -> list[list[str]]:
        """The table's rows: layer, type, output shape, parameters."""
        return [[str(layer.get("name", "")), str(layer.get("type", "")),
                 _shape(layer.get("output_shape", [])), f"{int(layer.get('n_parameters', 0)):,}"]
                for layer in self.get("layers", [])]

    def footer(self) -> list[str]:
        """The lines under the table: what the total counts, and what is stored besides."""
        lines = [f"Total learned parameters: {int(self.get('n_parameters', 0)):,}"]
        stored = self.get("stored", {})
        if stored:
            lines.append("Stored, not learned: " + ", ".join(
                f"{name} = {value}" for name, value in stored.items()))
        if "training_precision" in self:  # a CNN's precision="auto" chose it for this CPU
            lines.append(f"Trained in {self['training_precision']}")
        return lines

    def __str__(self) -> str:
        header = ["layer", "type", "output shape", "parameters"]
        table = [header, *self.rows()]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]

        def line(row: list[str]) -> str:
            cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
            return "  ".join([*cells, row[-1].rjust(widths[-1])])

        rule = "-" * len(line(header))
        title = f"{self.get('kind', 'model')} model, classes {self.get('classes', [])}"
        return "\n".join([title, rule, line(header), rule, *map(line, table[1:]), rule,
                          *self.footer()])

    __repr__ = __str__  # a notebook cell's last line shows the table, not the dict

    def _repr_html_(self) -> str:
        from digitlab.display import html_table  # here: printing a summary needs no matplotlib

        return (f"<div><p><b>{html.escape(str(self.get('kind', 'model')))}</b> model, classes "
                f"{html.escape(str(self.get('classes', [])))}</p>"
                + html_table(["layer", "type", "output shape", "parameters"], self.rows())
                + "".join(f"<p>{html.escape(line)}</p>" for line in self.footer()) + "</div>")
