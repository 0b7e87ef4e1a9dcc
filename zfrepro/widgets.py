"""Interactive explorers (ipywidgets) for reading the paper along with a trained network.

- :func:`feature_explorer`: choose a layer and a feature map, see its top-9 deconvnet projections
  beside their image patches (Fig. 2 for any map, not only the ones the notebook shows).
- :func:`occlusion_explorer`: choose a validation image, move a grey square, see the class
  probabilities change (Fig. 7 one position at a time).

Every figure here can also be produced without widgets (the notebooks do; papermill runs stay
headless): the explorers only choose *which* one to draw. Each returns the widget box; its
``.children`` are the controls, so tests (and scripts) can set values and read the output.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["feature_explorer", "occlusion_explorer"]


def _image_widget(fig: Any) -> Any:
    """A matplotlib Figure as an ipywidgets Image (PNG bytes; no pyplot state)."""
    import io

    import ipywidgets as w

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return w.Image(value=buf.getvalue(), format="png")


def feature_explorer(model: nn.Module, data: Any, tops: dict[str, Any], *, k: int = 9) -> Any:
    """Layer and feature-map pickers → the map's top-``k`` projections and patches (Fig. 2).

    ``data``: a :class:`zfrepro.data.ModelInputs`; ``tops``: the result of
    :func:`zfrepro.scan.top_activations` over it. Returns a ``VBox(layer, map, output)``;
    ``.state`` (a dict) holds the last drawn ``UnitPatches`` under ``"units"``."""
    import ipywidgets as w

    from .deconv import DeconvNet
    from .features import project_top_units
    from .plotting import plot_feature_grid

    if not tops:
        raise ConfigError("feature_explorer needs scan results: tops = top_activations(model, data, layers=...)")
    dn = DeconvNet(model)
    layers = [name for name in dn.layers if name in tops]
    layer = w.Dropdown(options=layers, value=layers[-1], description="layer")
    fmap = w.BoundedIntText(value=0, min=0, max=tops[layers[-1]].values.shape[0] - 1, description="map")
    out = w.Box()
    box = w.VBox([layer, fmap, out])
    box.state = {}

    def draw(*_: Any) -> None:
        t = tops[layer.value]
        fmap.max = t.values.shape[0] - 1
        m = min(int(fmap.value), fmap.max)
        units = project_top_units(model, data, t, [m], k=min(k, t.values.shape[1]), deconv=dn)
        box.state["units"] = units
        fig = plot_feature_grid(units, ncols=1, title=f"{layer.value} map {m}: top {units.values.shape[1]}")
        out.children = [_image_widget(fig)]

    layer.observe(draw, names="value")
    fmap.observe(draw, names="value")
    draw()
    return box


def occlusion_explorer(model: nn.Module, data: Any, *, size: int | None = None) -> Any:
    """Image and occluder-position sliders → the occluded image and the top-5 class probabilities.

    ``data``: a :class:`zfrepro.data.ModelInputs`. Returns a ``VBox(image, row, col, output)``;
    ``.state["probs"]`` holds the last probability vector (what a brute-force forward gives)."""
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
    out = w.Box()
    box = w.VBox([index, row, col, out])
    box.state = {}
    names = getattr(data, "class_names", None)

    def draw(*_: Any) -> None:
        x, y = data[int(index.value)]
        x = x.clone()
        x[:, row.value:row.value + size, col.value:col.value + size] = 0.0  # the dataset mean
        was = model.training
        model.eval()
        with torch.no_grad():
            p = model(x[None].to(dev)).softmax(1)[0].cpu()
        model.train(was)
        box.state["probs"] = p
        fig = new_figure((7, 2.6))
        a, b = fig.subplots(1, 2)
        shown = data.to_display(x) if hasattr(data, "to_display") else x
        a.imshow(to_image(shown))
        a.set_axis_off()
        a.set_title(f"true: {names[y] if names else y}", fontsize=8)
        top = p.topk(min(5, p.numel()))
        labels = [names[i] if names else str(i) for i in top.indices.tolist()]
        b.barh(range(len(labels))[::-1], top.values.numpy(), color=["C3" if i == y else "C0" for i in top.indices.tolist()])
        b.set_yticks(range(len(labels))[::-1], labels, fontsize=7)
        b.set_xlim(0, 1)
        b.set_xlabel("probability", fontsize=8)
        out.children = [_image_widget(fig)]

    for c in (index, row, col):
        c.observe(draw, names="value")
    draw()
    return box
