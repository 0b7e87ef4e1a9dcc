"""Figures: one save function with deterministic metadata, and the plot helpers of the notebooks.

Every helper returns a :class:`matplotlib.figure.Figure`, accepts ``ax=None`` where it draws a
single panel, and never calls ``plt.show()``. Figures are made with ``matplotlib.figure.Figure``
directly (no pyplot state), so importing this module changes no global setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from .io import atomic_path, project_root

__all__ = ["save_figure", "figure_dir", "new_figure", "plot_architecture", "plot_image_grid", "to_image"]


def new_figure(figsize: tuple[float, float] = (6, 4), **kw: Any) -> Figure:
    """A pyplot-free figure (Jupyter still displays it as the cell's value)."""
    return Figure(figsize=figsize, layout="constrained", **kw)


def figure_dir(profile: str = "default") -> Path:
    """Where a profile's figures go: the committed gallery ``figures/`` for ``default``,
    ``build/<profile>/figures`` for every other profile (so CI runs never touch the gallery)."""
    root = project_root()
    return root / "figures" if profile == "default" else root / "build" / profile / "figures"


def save_figure(fig: Figure, name: str, profile: str = "default", *, directory: str | Path | None = None,
                dpi: int = 100) -> Path:
    """Save ``fig`` as ``<directory>/<name>.png`` with deterministic metadata (no date, fixed
    software tag), atomically. Returns the path. The single way figures are written."""
    out = Path(directory) if directory else figure_dir(profile)
    path = out / f"{name}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": "zfrepro", "Creation Time": None})
    return path


def to_image(x: Any) -> np.ndarray:
    """A C×H×W tensor/array (RGB or single channel) → H×W×C numpy array for ``imshow``."""
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    return a


def plot_image_grid(images: Sequence[Any], ncols: int, *, titles: Sequence[str] | None = None,
                    figsize: tuple[float, float] | None = None, cmap: str | None = None,
                    facecolor: str = "white") -> Figure:
    """Images (C×H×W in [0, 1]) in a grid with optional titles."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig = new_figure(figsize or (1.6 * ncols, 1.6 * nrows), facecolor=facecolor)
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i < n:
            ax.imshow(to_image(images[i]), cmap=cmap, interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    return fig


def plot_architecture(table: Any, ax: Any = None, title: str = "") -> Figure:
    """Fig. 3 drawn from a :func:`zfrepro.models.describe` table: one box per conv/fc layer whose
    height grows with the map size and width with the channel count, annotated with the kernel,
    stride, map size and the pool / contrast-norm stages that follow."""
    from matplotlib.patches import FancyBboxPatch

    if ax is None:
        fig = new_figure((12, 3.6))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    rows = table.to_dict("records")
    blocks: list[dict[str, Any]] = []
    for r in rows:
        if r["type"] in ("conv", "fc"):
            blocks.append({"main": r, "after": []})
        elif blocks:
            blocks[-1]["after"].append(r)
    in_size = int(table.attrs.get("input_size", 0))
    max_size = max([r["out_size"] for r in rows] + [in_size]) or 1

    def box(x: float, w: float, h: float, color: str, label: str, lines: list[str]) -> float:
        ax.add_patch(FancyBboxPatch((x, -h / 2), w, h, boxstyle="round,pad=0.02", fc=color, ec="k", lw=0.8))
        ax.text(x + w / 2, h / 2 + 0.15, label, ha="center", va="bottom", fontsize=9, weight="bold")
        ax.text(x + w / 2, -h / 2 - 0.15, "\n".join(lines), ha="center", va="top", fontsize=7.5)
        return x + w + 0.55

    x = 0.0
    if in_size:
        x = box(x, 0.3, 0.6 + 2.4 * (in_size / max_size) ** 0.5, "#dddddd", "input", [f"3@{in_size}²"])
    for b in blocks:
        r = b["main"]
        if r["type"] == "conv":
            h = 0.6 + 2.4 * (r["out_size"] / max_size) ** 0.5
            w = 0.25 + 0.9 * r["out_channels"] / 512
            lines = [f"{r['kernel']} /{r['stride']}", f"{r['out_channels']}@{r['out_size']}²"]
            for a in b["after"]:
                if a["type"] == "maxpool":
                    lines += [f"pool {a['kernel']}/{a['stride']} → {a['out_size']}²"]
                elif a["type"] == "contrast norm":
                    lines.append("contrast norm")
            x = box(x, w, h, "#8fb3d9", r["layer"], lines)
        else:
            x = box(x, 0.22, 2.6, "#e0a96d", r["layer"], [f"{r['out_channels']}", "units"])
    ax.set_xlim(-0.3, x)
    ax.set_ylim(-3.6, 2.2)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    return fig
