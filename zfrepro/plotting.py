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

__all__ = ["save_figure", "figure_dir", "new_figure", "figure_and_axis", "plot_architecture", "plot_image_grid", "to_image",
           "projection_to_image", "map_to_image", "plot_trace", "plot_unit_projection", "mosaic",
           "plot_feature_grid", "plot_filters", "plot_evolution", "plot_filter_change", "plot_remaining_change", "plot_invariance",
           "robust_scale", "plot_occlusion", "plot_faces", "plot_transfer"]


def new_figure(figsize: tuple[float, float] = (6, 4), **kw: Any) -> Figure:
    """A pyplot-free figure (Jupyter still displays it as the cell's value)."""
    return Figure(figsize=figsize, layout="constrained", **kw)


def figure_and_axis(ax: Any, figsize: tuple[float, float], **kw: Any) -> tuple[Figure, Any]:
    """The ``ax=None`` convention of every plot helper: ``ax``'s figure and ``ax`` when given, else a new
    :func:`new_figure` of ``figsize`` (``kw`` passed on) with one axis."""
    if ax is not None:
        return ax.figure, ax
    fig = new_figure(figsize, **kw)
    return fig, fig.add_subplot()


def figure_dir(output: str = "default") -> Path:
    """Where the figures of output name ``output`` go (:func:`zfrepro.outputs.output_name`): the
    committed gallery ``figures/`` for ``default``, ``build/<output>/figures`` for every other one (so CI
    runs and reruns with other parameters never touch the gallery)."""
    root = project_root()
    return root / "figures" if output == "default" else root / "build" / output / "figures"


def save_figure(fig: Figure, name: str, output: str = "default", *, directory: str | Path | None = None,
                dpi: int = 100) -> Path:
    """Save ``fig`` as ``<directory>/<name>.png`` (default: :func:`figure_dir` of ``output``) with
    deterministic metadata (no date, fixed software tag), atomically. Returns the path. The single way
    figures are written."""
    out = Path(directory) if directory else figure_dir(output)
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

    fig, ax = figure_and_axis(ax, (12, 3.6))
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


def projection_to_image(p: Any, scale: float | None = None) -> np.ndarray:
    """A deconvnet projection (3×H×W, signed) → H×W×3 in [0, 1] with zero at grey, the way the paper
    shows projections: ``0.5 + p / (2·scale)``, ``scale`` = max |p| (pass a shared scale to normalise a
    grid of projections together)."""
    a = to_image(p).astype(np.float32)
    s = float(np.abs(a).max()) if scale is None else float(scale)
    return np.clip(0.5 + a / (2 * s), 0, 1) if s > 0 else np.full_like(a, 0.5)


def robust_scale(p: Any, q: float = 0.995) -> float:
    """A contrast scale for signed projections: the ``q`` quantile of |p| over the whole stack (the
    max would let a few extreme pixels grey out everything else; the paper enhances contrast)."""
    a = np.abs(p.detach().cpu().float().numpy() if hasattr(p, "detach") else np.asarray(p, dtype=np.float32))
    nz = a[a > 0]
    if nz.size == 0:
        return 1.0
    return float(np.quantile(nz, q)) or float(nz.max())


def map_to_image(m: Any) -> np.ndarray:
    """A stack of feature maps C×H×W (or one H×W map) → one H×W image: the sum of |maps|."""
    a = m.detach().cpu().float().numpy() if hasattr(m, "detach") else np.asarray(m, dtype=np.float32)
    return np.abs(a).sum(0) if a.ndim == 3 else np.abs(a)


def plot_trace(steps: Sequence[tuple[str, Any]], image: Any = None, ncols: int = 5) -> Figure:
    """Fig. 1 (top) unrolled: every intermediate signal of a deconvnet pass (from ``DeconvNet.trace``),
    each shown as the sum of absolute values over its feature maps, the last one (pixels) as a
    projection; ``image`` (3×H×W in [0, 1]) is shown first when given."""
    panels: list[tuple[str, np.ndarray, str | None]] = []
    if image is not None:
        panels.append(("input image", to_image(image), None))
    for i, (name, t) in enumerate(steps):
        t0 = t[0] if t.dim() == 4 else t
        if i == len(steps) - 1 and t0.shape[0] == 3:
            panels.append((f"{name}\n(pixels)", projection_to_image(t0), None))
        else:
            panels.append((f"{name}\n{tuple(t0.shape)}", map_to_image(t0), "magma"))
    nrows = -(-len(panels) // ncols)
    fig = new_figure((2.4 * ncols, 2.5 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, (title, img, cmap) in zip(axes, panels):
        ax.imshow(img, cmap=cmap, interpolation="nearest")
        ax.set_title(title, fontsize=8)
    return fig


def plot_unit_projection(image: Any, fmap: Any, projection: Any, box: Sequence[int] | None = None,
                         titles: Sequence[str] = ("image", "feature map", "deconvnet projection")) -> Figure:
    """Fig. 1 (bottom) for one unit: the image with the unit's receptive-field ``box``
    (top, left, bottom, right), the layer's feature map, and the unit's projection to pixels."""
    from matplotlib.patches import Rectangle

    fig = new_figure((7.5, 2.8))
    axes = fig.subplots(1, 3)
    axes[0].imshow(to_image(image))
    if box is not None:
        top, left, bottom, right = box
        axes[0].add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, ec="yellow", lw=1.5))
    axes[1].imshow(map_to_image(fmap), cmap="magma")
    axes[2].imshow(projection_to_image(projection, robust_scale(projection)))
    for ax, t in zip(axes, titles):
        ax.set_title(t, fontsize=8)
        ax.set_axis_off()
    return fig


def mosaic(tiles: Sequence[np.ndarray], ncols: int, gap: int = 2, fill: float = 0.5) -> np.ndarray:
    """Tiles (H×W×3 arrays of one size) in a grid with ``gap``-pixel grey gutters."""
    h, w = tiles[0].shape[:2]
    nrows = -(-len(tiles) // ncols)
    out = np.full((nrows * h + (nrows - 1) * gap, ncols * w + (ncols - 1) * gap, 3), fill, dtype=np.float32)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = t
    return out


def plot_feature_grid(units: Any, ncols: int = 2, title: str = "", tile_inches: float = 1.5) -> Figure:
    """Fig. 2 for one layer: for each feature map, its top-k deconvnet projections (contrast-normalised
    together, per grid, zero at grey, saturating the top 0.5 % of |values|: :func:`robust_scale`) beside the matching image patches, on a grey background.
    ``units`` is a :class:`zfrepro.top_units.UnitPatches`."""
    m, k = units.projections.shape[:2]
    side = int(round(k ** 0.5))
    nrows = -(-m // ncols)
    fig = new_figure((ncols * 2 * tile_inches + 0.2, nrows * tile_inches + (0.4 if title else 0.1)), facecolor="0.5")
    axes = np.atleast_1d(fig.subplots(nrows, 2 * ncols, gridspec_kw={"wspace": 0.02, "hspace": 0.02})).reshape(nrows, 2 * ncols)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i in range(m):
        r, c = divmod(i, ncols)
        proj = units.projections[i]
        scale = robust_scale(proj)
        axes[r, 2 * c].imshow(mosaic([projection_to_image(p, scale) for p in proj], side))
        axes[r, 2 * c + 1].imshow(mosaic([to_image(p) for p in units.patches[i]], side))
        axes[r, 2 * c].set_title(f"map {units.maps[i]}", fontsize=7, color="white", pad=2)
    if title:
        fig.suptitle(title, color="white", fontsize=10)
    return fig


def plot_filters(weight: Any, ncols: int = 16, title: str = "", *, shared_scale: bool = False,
                 ax: Any = None) -> Figure:
    """Layer-1 filters (C_out×3×k×k) as colour tiles (Fig. 2 layer 1, Fig. 6 a-c). By default each is
    stretched to its own range (to see its pattern); ``shared_scale=True`` puts all on one scale,
    zero at grey (``0.5 + w / (2 max|w|)``), so that dominant and dead filters show as such (Fig. 6a)."""
    w = weight.detach().cpu().float()
    tiles = []
    top = float(w.abs().max()) or 1.0
    for f in w:
        if shared_scale:
            a = 0.5 + f / (2 * top)
        else:
            a = f - f.min()
            a = a / a.max() if a.max() > 0 else a + 0.5
        tiles.append(to_image(a))
    size = (ncols * 0.45, -(-len(tiles) // ncols) * 0.45 + (0.3 if title else 0))
    fig, ax = figure_and_axis(ax, size, facecolor="0.5")
    ax.imshow(mosaic(tiles, ncols, gap=1), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9, color="white")
    return fig


def plot_evolution(evolution: dict[str, Any], epochs: Sequence[int], tile_inches: float = 0.9) -> Figure:
    """Fig. 4: one row per feature map (grouped by layer), one column per snapshot epoch; each panel
    the map's strongest projection at that epoch, contrast-stretched on its own (the paper enhances
    colour contrast)."""
    rows = [(name, i) for name, t in evolution.items() for i in range(t.shape[0])]
    ncols = len(epochs)
    fig = new_figure((ncols * tile_inches + 0.8, len(rows) * tile_inches + 0.4), facecolor="0.5")
    axes = np.atleast_2d(fig.subplots(len(rows), ncols, gridspec_kw={"wspace": 0.03, "hspace": 0.03}))
    if axes.shape != (len(rows), ncols):
        axes = axes.reshape(len(rows), ncols)
    for r, (name, i) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.imshow(projection_to_image(evolution[name][i, c]))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"epoch {epochs[c]}", fontsize=7, color="white")
            if c == 0:
                ax.set_ylabel(f"{name}", fontsize=7, color="white")
    return fig


def plot_filter_change(changes: dict[int, dict[str, float]], ax: Any = None) -> Figure:
    """How much each layer's filters move between consecutive snapshots (``{epoch: {layer: 1 - mean
    cosine}}``, the change from the previous snapshot to ``epoch``), one line per layer (Fig. 4)."""
    fig, ax = figure_and_axis(ax, (5, 3))
    epochs = sorted(changes)
    layers = list(changes[epochs[0]]) if epochs else []
    for name in layers:
        ax.plot(epochs, [changes[e][name] for e in epochs], marker="o", label=name)
    ax.set_xlabel("epoch (change since the previous snapshot)")
    ax.set_ylabel("1 - mean cosine of filters")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    return fig


def plot_remaining_change(remaining: dict[int, dict[str, float]], settling: dict[str, float] | None = None,
                          ax: Any = None) -> Figure:
    """Fig. 4's settling: each layer's share of its way to its final filters still ahead at each
    snapshot (:func:`zfrepro.top_units.remaining_change`), one line per layer; ``settling`` (layer →
    epochs, :func:`zfrepro.top_units.settling_epochs`) goes into the legend."""
    fig, ax = figure_and_axis(ax, (5, 3))
    epochs = sorted(remaining)
    layers = list(remaining[epochs[0]]) if epochs else []
    for name in layers:
        label = f"{name}: {settling[name]:.1f} epochs" if settling and name in settling else name
        ax.plot(epochs, [remaining[e][name] for e in epochs], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("way left to the final filters")
    ax.set_title("how fast each layer settles", fontsize=9)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, title="epochs to settle", title_fontsize=7)
    return fig


def plot_invariance(curves: dict[str, Any], examples: dict[str, Sequence[Any]], layers: Sequence[str],
                    class_names: Sequence[str] | None = None) -> Figure:
    """Fig. 5: one row per transformation (``curves``: kind → DataFrame of
    :func:`zfrepro.invariance.feature_distance_curves`), columns: example transformed images, the
    feature distance at each of ``layers`` (normalised by the original's feature norm), and
    P(true label); one line per image."""
    kinds = list(curves)
    fig = new_figure((3.0 * (2 + len(layers)), 2.6 * len(kinds)))
    axes = np.atleast_2d(fig.subplots(len(kinds), 2 + len(layers)))
    xlabels = {"translate": "vertical translation (pixels)", "scale": "scale ratio", "rotate": "rotation (degrees)"}
    for r, kind in enumerate(kinds):
        df = curves[kind]
        ex = [to_image(e) for e in examples[kind]]
        axes[r, 0].imshow(mosaic(ex, len(ex), gap=2, fill=1.0))
        axes[r, 0].set_axis_off()
        axes[r, 0].set_title(f"{kind}: examples", fontsize=8)
        for c, what in enumerate(list(layers) + ["p_true"], start=1):
            ax = axes[r, c]
            for i, g in df.groupby("image"):
                sel = g[g.layer == (layers[0] if what == "p_true" else what)]  # P(true) is stored per layer row
                label = class_names[int(sel.label.iloc[0])] if class_names is not None else f"image {i}"
                col = "p_true" if what == "p_true" else "normalized_distance"
                ax.plot(sel.amount, sel[col], marker=".", ms=3, lw=1, label=label)
            ax.set_xlabel(xlabels.get(kind, kind), fontsize=8)
            ax.set_ylabel("P(true class)" if what == "p_true" else f"{what}: distance / |original|", fontsize=8)
            ax.tick_params(labelsize=7)
        if r == 0:
            axes[r, -1].legend(fontsize=6)
    return fig


def plot_occlusion(rows: Sequence[dict[str, Any]], class_names: Sequence[str], tile_inches: float = 2.0) -> Figure:
    """Fig. 7: one row per image, the paper's columns — (a) the image with the occluder drawn at one
    position, (b) total activation of the layer-5 map strongest in the unoccluded image vs occluder
    position, (c) the deconvnet projection of that map's strongest unit in this image (box: its
    receptive field) and (c′) the map's top projections in other images, (d) P(correct class) vs
    occluder position, (e) the most probable class vs occluder position, with a legend.

    Each row: ``image`` (3×H×W in [0, 1]), ``result`` (:class:`zfrepro.occlusion.OcclusionResult`),
    ``target`` (int), ``projection`` (3×H×W signed), ``box`` (top, left, bottom, right), ``others``
    (k×3×R×R signed projections from the scan), ``layer`` (str)."""
    import matplotlib
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch, Rectangle

    palette = [tuple(c) for c in np.asarray(matplotlib.colormaps["tab20"].colors)]
    fig = new_figure((6 * tile_inches + 1.2, len(rows) * tile_inches + 0.5))
    axes = np.atleast_2d(fig.subplots(len(rows), 6))
    titles = ["(a) input; grey: worst occluder", "(b) {layer} map {ch}: total activation", "(c) its strongest unit, projected",
              "(c′) its top units in other images", "(d) P({name})", "(e) most probable class"]
    for r, row in enumerate(rows):
        res, img = row["result"], to_image(row["image"])
        h, w = img.shape[:2]
        half = res.size / 2
        # map coordinates: occluder centres in image pixels
        ext = (res.cols[0] + half - 0.5, res.cols[-1] + half + 0.5, res.rows[-1] + half + 0.5, res.rows[0] + half - 0.5)
        a = axes[r]
        a[0].imshow(img)
        j = int(res.prob.flatten().argmin())
        rr, cc = res.rows[j // len(res.cols)], res.cols[j % len(res.cols)]
        a[0].add_patch(Rectangle((cc - 0.5, rr - 0.5), res.size, res.size, color="0.5", alpha=0.85))
        im = a[1].imshow(res.activation.numpy(), cmap="magma", extent=ext)
        fig.colorbar(im, ax=a[1], fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
        a[2].imshow(projection_to_image(row["projection"], robust_scale(row["projection"])))
        t, l, b, rgt = row["box"]
        a[2].add_patch(Rectangle((l - 0.5, t - 0.5), rgt - l, b - t, fill=False, ec="black", lw=1.2))
        a[2].set_xlim(-0.5, w - 0.5)
        a[2].set_ylim(h - 0.5, -0.5)
        others = row["others"]
        side = max(1, int(round(len(others) ** 0.5)))
        a[3].imshow(mosaic([projection_to_image(p, robust_scale(others)) for p in others], side))
        im = a[4].imshow(res.prob.numpy(), cmap="jet", vmin=0, vmax=1, extent=ext)
        fig.colorbar(im, ax=a[4], fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
        present = sorted(set(res.top_class.flatten().tolist()))
        lut = {c: i for i, c in enumerate(present)}
        codes = res.top_class.clone().apply_(lambda v: lut[v]).numpy()
        cmap = ListedColormap([palette[(2 * c) % 20 if c < 10 else (2 * c + 1) % 20] for c in present])
        a[5].imshow(codes, cmap=cmap, norm=BoundaryNorm(np.arange(len(present) + 1) - 0.5, len(present)),
                    extent=ext, interpolation="nearest")
        names = [class_names[c] if c < len(class_names) else str(c) for c in present]
        a[5].legend(handles=[Patch(color=cmap(i), label=n + (" (true)" if c == row["target"] else ""))
                             for i, (c, n) in enumerate(zip(present, names))],
                    fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        target_name = class_names[row["target"]] if row["target"] < len(class_names) else str(row["target"])
        for c, ax in enumerate(a):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(titles[c].format(layer=row.get("layer", "conv5"), ch=res.channel, name=target_name),
                         fontsize=7)
    return fig


def plot_faces(images: Sequence[Any], points: dict[str, Any], sizes: Sequence[int], ncols: int = 6,
               labels: Sequence[str] | None = None) -> Figure:
    """The correspondence annotations drawn on their images (Fig. 8's pool): each part's centre and
    its mask square, so that a reader can check them. ``points``: part → N×2 (x, y)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    colors = {"right_eye": "red", "left_eye": "lime", "nose": "cyan"}
    n = len(images)
    nrows = -(-n // ncols)
    fig = new_figure((1.8 * ncols, 1.9 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for i, img in enumerate(images):
        ax = axes[i]
        ax.imshow(to_image(img))
        s = float(sizes[i])
        for part, pts in points.items():
            x, y = float(pts[i][0]), float(pts[i][1])
            c = colors.get(part, "yellow")
            ax.add_patch(Rectangle((x - s / 2 - 0.5, y - s / 2 - 0.5), s, s, fill=False, ec=c, lw=0.8))
            ax.plot([x - 0.5], [y - 0.5], marker="+", color=c, ms=5)
        if labels is not None:
            ax.set_title(labels[i], fontsize=6)
    handles = [Line2D([], [], color=c, marker="+", ls="", label=p)
               for p, c in colors.items() if p in points]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=7, frameon=False)
    return fig


def plot_transfer(rows: Sequence[dict[str, Any]], paper: dict[tuple[str, int], tuple[float, float]] | None = None,
                  ax: Any = None, title: str = "") -> Figure:
    """Table 7 as a plot (the paper has none): mean per-class accuracy against layer, one line per
    classifier (``rows`` from :func:`zfrepro.transfer.evaluate_layers`, error bars ± 1 std over folds),
    the paper's values as hollow markers where it gives them (``paper``: ``(kind, layer number) →
    (mean, std)``, layers numbered 1… in the rows' order)."""
    fig, ax = figure_and_axis(ax, (5.5, 3.4))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    for k, kind in enumerate(kinds):
        mine = [r for r in rows if r["kind"] == kind]
        xs = np.arange(1, len(mine) + 1)
        colour = f"C{k}"
        ax.errorbar(xs, [r["mean"] for r in mine], yerr=[r["std"] for r in mine], marker="o", color=colour,
                    capsize=2, label=f"{kind} (ours)")
        if paper:
            pts = sorted((n, v) for (kd, n), v in paper.items() if kd == kind)
            if pts:
                ax.errorbar([n for n, _ in pts], [v[0] for _, v in pts], yerr=[v[1] for _, v in pts], marker="s",
                            mfc="none", ls=":", color=colour, capsize=2, label=f"{kind} (paper)")
        ax.set_xticks(xs, [f"{i}\n{r['layer']}" for i, r in zip(xs, mine)], fontsize=7)
    ax.set_xlabel("layer whose features the classifier reads")
    ax.set_ylabel("mean per-class accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=9)
    return fig
