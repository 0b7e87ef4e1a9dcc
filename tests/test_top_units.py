"""Fig. 2 / Fig. 4 helpers: top-unit projections cut to the receptive field, map choice, filter change."""

from __future__ import annotations

import copy

import pytest
import torch

from fakes import FakeInputs
from zfrepro.deconv import DeconvNet
from zfrepro.errors import ConfigError
from zfrepro.top_units import (choose_maps, feature_evolution, filter_change, project_top_units, remaining_change,
                                settling_epochs)
from zfrepro.models import zfnet
from zfrepro.receptive import crop_patch, receptive_field
from zfrepro.scan import top_activations


_Inputs = FakeInputs


def _model():
    torch.manual_seed(0)
    return zfnet(num_classes=10, input_size=64, width=0.25, fc_width=32).eval()


def test_project_top_units_equals_single_projections_cut_to_the_field():
    model, data = _model(), _Inputs()
    tops = top_activations(model, data, layers=["conv3"], k=3, progress=False)["conv3"]
    maps = choose_maps(tops, 2)
    units = project_top_units(model, data, tops, maps, k=3, batch_size=4)
    rf = receptive_field(model, "conv3", (0, 0))
    side = rf[2] - rf[0]
    assert units.projections.shape == (2, 3, 3, side, side) and units.patches.shape == (2, 3, 3, side, side)
    m, r = maps[1], 2
    i, pos = int(tops.image_index[m, r]), tops.position[m, r]
    alone = DeconvNet(model).project(data.batch([i]), "conv3", [m], pos[None])[0]
    box = receptive_field(model, "conv3", pos.tolist())
    assert torch.allclose(units.projections[1, 2], crop_patch(alone, box), atol=1e-6)
    assert torch.allclose(units.patches[1, 2], crop_patch(data.to_display(data.batch([i]))[0], box, fill=0.5))
    # where the receptive field leaves the image: marked, nothing projected there
    assert units.inside.shape == units.projections.shape[:2] + units.projections.shape[-2:]
    assert (~units.inside).any() and (units.projections.abs().sum(2)[~units.inside] == 0).all()
    h, w = data.batch([i]).shape[-2:]
    assert int(units.inside[1, 2].sum()) == (min(box[2], h) - max(box[0], 0)) * (min(box[3], w) - max(box[1], 0))


def test_choose_maps_is_reproducible_skips_dead_maps_and_differs_per_layer():
    model, data = _model(), _Inputs()
    tops = top_activations(model, data, layers=["conv2", "conv4"], k=2, progress=False)
    a = choose_maps(tops["conv2"], 5, seed=1)
    assert a == choose_maps(tops["conv2"], 5, seed=1) and len(a) == 5
    assert all(tops["conv2"].values[m, 0] > 0 for m in a)
    tops["conv2"].values[a[0]] = 0
    assert a[0] not in choose_maps(tops["conv2"], 200, seed=1)
    assert choose_maps(tops["conv4"], 5, seed=1) != choose_maps(tops["conv2"], 5, seed=1)


def test_filter_change_and_evolution_shapes():
    m1 = _model()
    m2 = copy.deepcopy(m1)
    assert filter_change(m1, m2, ["conv1", "conv5"]) == {"conv1": 0.0, "conv5": 0.0}
    with torch.no_grad():
        m2.features.conv5.weight.mul_(-1)
    assert abs(filter_change(m1, m2, ["conv5"])["conv5"] - 2.0) < 1e-5
    data = _Inputs()
    evo = feature_evolution({1: m1, 3: m2}, data, {"conv1": [0, 1], "conv5": [2]}, limit=8)
    assert evo["conv1"].shape[:2] == (2, 2) and evo["conv5"].shape[:2] == (1, 2)


def test_remaining_change_and_settling_epochs_follow_the_weights():
    """conv1 covers its whole way by epoch 2 and conv5 moves at a constant pace to epoch 10: conv1's
    share ahead is 0 from epoch 2 on, conv5's falls linearly; the areas are exact trapezoids."""
    start = _model()
    target = copy.deepcopy(start)
    with torch.no_grad():
        for name in ("conv1", "conv5"):
            w = getattr(target.features, name).weight
            w.add_(torch.randn_like(w) * (10.0 if name == "conv1" else 0.01))  # the scale must not matter
    models = {}
    for e in (1, 2, 5, 10):
        m = copy.deepcopy(start)
        with torch.no_grad():
            for name, t in (("conv1", min(1.0, e - 1)), ("conv5", (e - 1) / 9)):
                w0, w1 = getattr(start.features, name).weight, getattr(target.features, name).weight
                getattr(m.features, name).weight.copy_(w0 + t * (w1 - w0))
        models[e] = m
    rem = remaining_change(models, ["conv1", "conv5"])
    assert rem[1] == pytest.approx({"conv1": 1.0, "conv5": 1.0}) and rem[10] == {"conv1": 0.0, "conv5": 0.0}
    assert rem[2]["conv1"] == pytest.approx(0.0, abs=1e-6) and rem[5]["conv5"] == pytest.approx(5 / 9)
    s = settling_epochs(rem)
    assert s["conv1"] == pytest.approx(0.5, abs=1e-6)  # one interval from 1 to 0
    assert s["conv5"] == pytest.approx(4.5)            # constant pace over 9 epochs: half the span
    assert settling_epochs({str(e): v for e, v in rem.items()}) == pytest.approx(s)  # JSON keys
    # a layer that does not move at all has nothing ahead
    frozen = remaining_change({1: start, 3: copy.deepcopy(start)}, ["conv2"])
    assert frozen == {1: {"conv2": 0.0}, 3: {"conv2": 0.0}}
    with pytest.raises(ConfigError, match="two snapshots"):
        remaining_change({1: start}, ["conv1"])


def test_plot_remaining_change_draws_one_line_per_layer_on_a_given_axis():
    """Fig. 4's settling plot: a Figure, one line per layer with its epochs in the legend, on ``ax`` when given."""
    from matplotlib.figure import Figure

    from zfrepro.plotting import plot_remaining_change

    rem = {1: {"conv1": 1.0, "conv5": 1.0}, 5: {"conv1": 0.2, "conv5": 0.6}, 10: {"conv1": 0.0, "conv5": 0.0}}
    fig = plot_remaining_change(rem, settling_epochs(rem))
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [list(line.get_ydata()) for line in ax.get_lines()] == [[1.0, 0.2, 0.0], [1.0, 0.6, 0.0]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["conv1: 2.9 epochs", "conv5: 4.7 epochs"]  # trapezoids: 4·1.2/2 + 5·0.2/2, 4·1.6/2 + 5·0.6/2
    host = Figure()
    given = host.add_subplot()
    assert plot_remaining_change(rem, ax=given) is host and len(given.get_lines()) == 2


def test_evolution_on_a_sample_projects_the_samples_strongest_unit():
    from zfrepro.top_units import evenly_spaced

    assert evenly_spaced(10, 4) == [0, 3, 6, 9] and evenly_spaced(5, 0) == [0, 1, 2, 3, 4] and evenly_spaced(3, 9) == [0, 1, 2]
    model, data = _model(), _Inputs(n=12)
    sample = evenly_spaced(len(data), 5)
    evo = feature_evolution({1: model}, data, {"conv2": [3]}, limit=5)["conv2"][0, 0]
    dn = DeconvNet(model)
    acts = dn.forward_to(data.batch(sample), "conv2")[:, 3]
    best = int(acts.flatten(1).max(1).values.argmax())
    pos = divmod(int(acts[best].argmax()), acts.shape[-1])
    x = data.batch([sample[best]])
    ref = crop_patch(dn.project(x, "conv2", [3], [pos])[0], receptive_field(model, "conv2", pos), fill=0.0)
    assert best != sample[best] or sample[best] == 0  # the sample index differs from the data index
    assert torch.allclose(evo, ref, atol=1e-6)


def test_median_projection_noise_is_the_median_over_the_chosen_units_of_every_layer():
    """Issue #14's per-layer number: the median of projection_noise over the chosen maps' top-k units."""
    from zfrepro.structure import projection_noise
    from zfrepro.top_units import median_projection_noise

    model, data = _model(), _Inputs()
    tops = top_activations(model, data, layers=DeconvNet(model).layers, k=3, progress=False)
    got = median_projection_noise(model, data, maps_per_layer=2, k=3, seed=1, tops=tops)
    assert list(got) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    units = project_top_units(model, data, tops["conv4"], choose_maps(tops["conv4"], 2, seed=1), k=3)
    r = projection_noise(units.projections, units.patches).flatten()
    assert got["conv4"] == round(float(r[torch.isfinite(r)].median()), 3)
    assert all(v > 0 for v in got.values())
