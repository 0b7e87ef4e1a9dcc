"""Interactive explorers (ipywidgets) for reading the paper along with a trained network.

- :func:`feature_explorer`: choose a layer and a feature map (and, given several snapshots, an epoch),
  see its top-9 deconvnet projections beside their image patches (Fig. 2 for any map, not only the
  ones the notebook shows; Fig. 4 for any map and epoch).
- :func:`occlusion_explorer`: choose a validation image, move a grey square, see the class
  probabilities change (Fig. 7 one position at a time), drawn and written out as text.

Figures are PNGs at :data:`DPI` sized for a notebook's width (about 800 px), shrunk to fit a narrower one.

Every figure here can also be produced without widgets (the notebooks do; papermill runs stay
headless): the explorers only choose *which* one to draw. Each returns the widget box; its
``.children`` are the controls, so tests (and scripts) can set values and read the output.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .layers import eval_mode

__all__ = ["DPI", "feature_explorer", "occlusion_explorer"]

#: Resolution of the explorers' figures: an 8-inch figure is 800 px, about a JupyterLab notebook's width.
DPI = 100


def _image_widget(fig: Any) -> Any:
    """A matplotlib Figure as an ipywidgets Image (PNG bytes; no pyplot state), at most the output's width."""
    import io

    import ipywidgets as w

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return w.Image(value=buf.getvalue(), format="png", layout=w.Layout(max_width="100%", height="auto"))


def feature_explorer(model: nn.Module, data: Any, tops: dict[str, Any], *, k: int = 9,
                     snapshots: dict[int, nn.Module] | None = None) -> Any:
    """Layer and feature-map pickers → the map's top-``k`` projections and patches (Fig. 2).

    ``data``: a :class:`zfrepro.data.ModelInputs`; ``tops``: the result of
    :func:`zfrepro.scan.top_activations` of ``model`` over it. Returns a ``VBox(layer, map, output)``
    (``VBox(epoch, layer, map, output)`` with ``snapshots``); ``.state`` (a dict) holds the last drawn
    ``UnitPatches`` under ``"units"``. ``snapshots`` (epoch → network, e.g. Fig. 4's) adds an epoch
    picker, last epoch first: ``model`` and ``tops`` stand for the last one, any other is scanned over
    ``data`` the first time it is chosen (the same layers and ``k``)."""
    import ipywidgets as w

    from .deconv import DeconvNet
    from .top_units import project_top_units
    from .plotting import plot_feature_grid
    from .scan import top_activations

    if not tops:
        raise ConfigError("feature_explorer needs scan results: tops = top_activations(model, data, layers=...)")
    layers = [name for name in DeconvNet(model).layers if name in tops]
    epochs = sorted(snapshots or {})
    nets: dict[Any, tuple[nn.Module, Any, dict[str, Any]]] = {}  # epoch → (model, deconvnet, tops), filled lazily
    last = epochs[-1] if epochs else None
    nets[last] = (model, DeconvNet(model), tops)
    epoch = w.Dropdown(options=epochs[::-1], value=last, description="epoch") if epochs else None
    layer = w.Dropdown(options=layers, value=layers[-1], description="layer")
    fmap = w.BoundedIntText(value=0, min=0, max=tops[layers[-1]].values.shape[0] - 1, description="map")
    out = w.Box(layout=w.Layout(width="100%"))
    box = w.VBox(([epoch] if epoch else []) + [layer, fmap, out])
    box.state = {}

    def draw(*_: Any) -> None:
        e = epoch.value if epoch else None
        if e not in nets:
            net = snapshots[e]
            kk = tops[layers[0]].values.shape[1]
            nets[e] = (net, DeconvNet(net), top_activations(net, data, layers=layers, k=kk, progress=False))
        net, dn, scans = nets[e]
        t = scans[layer.value]
        fmap.max = t.values.shape[0] - 1
        m = min(int(fmap.value), fmap.max)
        units = project_top_units(net, data, t, [m], k=min(k, t.values.shape[1]), deconv=dn)
        box.state["units"] = units
        when = f"epoch {e}, " if e is not None else ""
        fig = plot_feature_grid(units, ncols=1, tile_inches=3.9,
                                title=f"{when}{layer.value} map {m}: top {units.values.shape[1]} "
                                      "(left: projections, right: image patches)")
        out.children = [_image_widget(fig)]

    for c in ([epoch] if epoch else []) + [layer, fmap]:
        c.observe(draw, names="value")
    draw()
    return box


def occlusion_explorer(model: nn.Module, data: Any, *, size: int | None = None) -> Any:
    """Image and occluder-position sliders → the occluded image and the top-5 class probabilities.

    ``data``: a :class:`zfrepro.data.ModelInputs`. Returns a ``VBox(image, row, col, output, text)``:
    ``output`` holds the drawn figure, ``text`` (an HTML widget) P(true class) and the top 5 in words;
    ``.state["probs"]`` holds the last probability vector (what a brute-force forward gives)."""
    import html

    import ipywidgets as w

    from .plotting import new_figure, to_image

    n = len(data)
    if n == 0:
        raise ConfigError("occlusion_explorer needs at least one image")
    x0, _ = data[0]
    h, wd = x0.shape[-2:]
    size = size or max(1, min(h, wd) // 4)
    dev = next(model.parameters()).device
    index = w.BoundedIntText(value=0, min=0, max=n - 1, description="image")
    row = w.IntSlider(value=0, min=0, max=h - size, description="row")
    col = w.IntSlider(value=0, min=0, max=wd - size, description="col")
    out = w.Box(layout=w.Layout(width="100%"))
    text = w.HTML()
    box = w.VBox([index, row, col, out, text])
    box.state = {}
    names = getattr(data, "class_names", None)

    def draw(*_: Any) -> None:
        x, y = data[int(index.value)]
        x = x.clone()
        x[:, row.value:row.value + size, col.value:col.value + size] = 0.0  # the dataset mean
        with eval_mode(model), torch.no_grad():
            p = model(x[None].to(dev)).softmax(1)[0].cpu()
        box.state["probs"] = p
        fig = new_figure((8, 3.2))
        a, b = fig.subplots(1, 2)
        shown = data.to_display(x) if hasattr(data, "to_display") else x
        a.imshow(to_image(shown))
        a.set_axis_off()
        a.set_title(f"true: {names[y] if names else y}", fontsize=10)
        top = p.topk(min(5, p.numel()))
        labels = [names[i] if names else str(i) for i in top.indices.tolist()]
        b.barh(range(len(labels))[::-1], top.values.numpy(), color=["C3" if i == y else "C0" for i in top.indices.tolist()])
        b.set_yticks(range(len(labels))[::-1], labels, fontsize=9)
        b.set_xlim(0, 1)
        b.set_xlabel("probability", fontsize=10)
        out.children = [_image_widget(fig)]
        ranked = ", ".join(f"{lab} {v:.3f}" for lab, v in zip(labels, top.values.tolist()))
        text.value = (f"<code>occluder at row {row.value}, col {col.value} ({size} px): "
                      f"P({html.escape(str(names[y] if names else y))}) = {float(p[y]):.3f}; "
                      f"top 5: {html.escape(ranked)}</code>")

    for c in (index, row, col):
        c.observe(draw, names="value")
    draw()
    return box
