"""Notebook hygiene for the repository: write notebooks from cell lists and strip outputs.

``python tools/nbtools.py strip notebooks/*.ipynb`` removes outputs and execution counts
(notebooks are committed clean; executed copies belong in build/).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def make_notebook(cells: list[tuple[str, str]], path: str | Path) -> None:
    """Write ``cells`` ([("md"|"code"|"params", source), ...]) as a clean notebook."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, src in cells:
        src = src.strip("\n")
        if kind == "md":
            cell = nbformat.v4.new_markdown_cell(src)
        else:
            cell = nbformat.v4.new_code_cell(src)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    for i, c in enumerate(nb.cells):  # stable ids: clean diffs
        c["id"] = f"cell-{i:02d}"
    nbformat.write(nb, str(path))


def strip(path: str | Path) -> bool:
    """Remove outputs and execution counts in place; True if the file changed."""
    nb = nbformat.read(str(path), as_version=4)
    changed = False
    for c in nb.cells:
        if c.cell_type == "code" and (c.outputs or c.execution_count is not None):
            c.outputs, c.execution_count, changed = [], None, True
        for key in ("execution", "papermill"):
            if key in c.metadata:
                del c.metadata[key]
                changed = True
    if changed:
        nbformat.write(nb, str(path))
    return changed


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "strip":
        sys.exit("usage: python tools/nbtools.py strip NOTEBOOK...")
    for p in sys.argv[2:]:
        print(("stripped " if strip(p) else "clean    ") + p)
