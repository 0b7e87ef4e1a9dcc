"""Table 3 (notebook 09): the variant table, the grid budget, the claims on the paper's own numbers, the
variants through the deconvnet, scans and receptive fields, and run names of the existing profiles."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from zfrepro import ablation
from zfrepro.ablation import (BUDGETS, CLAIMS, VARIANTS, budget, check_claims, paper_table, summarize, table3_claims,
                              variant, variant_overrides, variant_table)
from zfrepro.claims import claims_json
from zfrepro.config import get_profile
from zfrepro.deconv import DeconvError, DeconvNet
from zfrepro.errors import ConfigError
from zfrepro.models import get_layer, layer_names, zfnet
from zfrepro.receptive import receptive_field
from zfrepro.scan import top_activations
from zfrepro.runs import run_dir_for
from zfrepro.train import build_network

from fakes import FakeInputs


def test_variant_table_is_the_papers():
    assert len(VARIANTS) == 12 and len({v.key for v in VARIANTS}) == 12
    assert [v.arch for v in VARIANTS].count("alexnet") == 7
    assert variant("alexnet/remove-3-4-6-7").paper == (71.1, 71.3, 50.1)
    assert variant("zfnet/baseline").paper == (33.1, 38.4, 16.5)
    assert variant("zfnet/maps-512-1024-512").paper[1:] == (ablation.TABLE2_B["val_top1"], ablation.TABLE2_B["val_top5"])
    with pytest.raises(ConfigError, match="unknown Table 3 variant 'zfnet/x': use one of alexnet/baseline"):
        variant("zfnet/x")


def test_variants_scale_with_the_profile():
    prof = get_profile("default")
    assert variant_overrides(variant("zfnet/fc-2048"), prof) == {"fc_width": 512}
    assert variant_overrides(variant("zfnet/fc-8192-maps-512-1024-512"), prof) == {
        "fc_width": 2048, "conv_maps": (96, 256, 512, 1024, 512)}
    assert variant_overrides(variant("alexnet/remove-6-7"), prof) == {"remove_layers": (6, 7)}
    assert variant_overrides(variant("zfnet/baseline"), prof) == {}
    t = variant_table("default").set_index("key")
    assert t.loc["zfnet/maps-512-1024-512", "ours conv maps"] == "48-128-256-512-256"
    assert t.loc["zfnet/maps-512-1024-512", "paper conv maps"] == "96-256-512-1024-512"
    assert t.loc["zfnet/baseline", "paper params"] == 62_357_608
    assert t.loc["alexnet/remove-3-4", "ours conv maps"] == "48-128-128"
    assert t.loc["alexnet/remove-6-7", "ours fc6/fc7"] == "–"


def test_budgets():
    b = budget("default")
    assert b["seeds"] == (0, 1) and b["overrides"]["epochs"] == 3 and b["overrides"]["input_size"] == 96
    assert budget("default", epochs=5, seeds=1) == {"overrides": {**BUDGETS["default"]["overrides"], "epochs": 5},
                                                   "seeds": (0,)}
    assert budget("smoke")["seeds"] == (0,)
    with pytest.raises(ConfigError, match="must be >= 0"):
        budget("default", epochs=-1)
    for name, b in BUDGETS.items():  # every budget is a valid set of profile overrides
        get_profile(name, **b["overrides"])


def test_profile_fields_keep_run_names_and_build_variants():
    assert run_dir_for("default").name == "zfnet"
    assert run_dir_for("default", epochs=5, eval_crops=1).name == "zfnet-104f6b68"  # Fig. 6's runs
    wide = run_dir_for("default", conv_maps="96,256,512,1024,512").name
    assert wide.startswith("zfnet-") and wide != run_dir_for("default", remove_layers="6,7").name
    prof = get_profile("smoke", conv_maps="96,256,512,1024,512", remove_layers="7")
    assert prof.conv_maps == (96, 256, 512, 1024, 512) and prof.remove_layers == (7,)
    net = build_network(prof, "zfnet", 10)
    assert layer_names(net) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc8"]
    assert net.features.conv4.out_channels == 256  # 1024 x 0.25
    with pytest.raises(ConfigError, match="cannot remove layer 5"):
        build_network(get_profile("smoke", remove_layers="5"), "alexnet", 10)


def test_claims_hold_on_the_papers_table():
    claims = check_claims(paper_table())
    assert all(claims[c] is True for c in CLAIMS)
    assert math.isclose(claims["deltas"]["alexnet/remove-3-4-6-7"], 30.8)


def _runs(errs: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Fake grid rows: key -> (train, val) errors as fractions, two seeds 0.01 apart."""
    rows = []
    for key, (tr, va) in errs.items():
        for seed, off in ((0, 0.0), (1, 0.01)):
            rows.append(dict(key=key, arch=key.split("/")[0], seed=seed, fc_width=8, conv_maps="1", params=1,
                             train_top1_err=tr + off, val_top1_err=va + off, val_top5_err=va / 2, seconds=1.0))
    return pd.DataFrame(rows)


def test_summarize_and_claims_on_a_grid():
    runs = _runs({"zfnet/maps-512-1024-512": (0.10, 0.30), "zfnet/baseline": (0.30, 0.40),
                  "alexnet/baseline": (0.3, 0.4), "alexnet/remove-3-4-6-7": (0.5, 0.5)})
    t = summarize(runs)
    assert list(t.key) == ["alexnet/baseline", "alexnet/remove-3-4-6-7", "zfnet/baseline", "zfnet/maps-512-1024-512"]
    row = t.set_index("key").loc["zfnet/baseline"]
    assert math.isclose(row.val_top1_err, 40.5) and math.isclose(row.val_top1_err_spread, 1.0)
    assert math.isclose(row.gap, 10.0) and row.paper_val_top1_err == 38.4 and row.seeds == 2
    c = check_claims(t)
    assert c["wider_middle_layers_help_val"] is True and c["wider_middle_layers_raise_gap"] is True
    assert c["removing_both_costs_most"] is True
    assert c["fc_removal_costs_little"] is None and c["wider_fc_and_maps_overfit"] is None  # rows missing


@pytest.mark.parametrize("key", ["alexnet/remove-3-4", "alexnet/remove-3-4-6-7", "zfnet/maps-512-1024-512"])
def test_deconvnet_scan_and_receptive_fields_understand_the_variants(key):
    v = variant(key)
    prof = get_profile("smoke", **variant_overrides(v, get_profile("smoke")))
    torch.manual_seed(0)
    net = build_network(prof, v.arch, 10).eval()
    convs = [n for n in layer_names(net) if n.startswith("conv")]
    dn = DeconvNet(net)
    assert dn.layers == convs
    data = FakeInputs(n=6, size=prof.input_size)
    tops = top_activations(net, data, layers=[convs[-1]], k=2, progress=False)[convs[-1]]
    img, ch, pos = tops.unit(0)
    pix = dn.project(data.x[img:img + 1], convs[-1], [ch])
    assert pix.shape == (1, 3, prof.input_size, prof.input_size) and torch.isfinite(pix).all()
    box = receptive_field(net, convs[-1], pos)
    assert box[2] - box[0] == box[3] - box[1] > 0
    if 3 in v.remove:  # conv5 right after conv2: its field is conv3's of the full network
        full = build_network(get_profile("smoke"), v.arch, 10)
        assert receptive_field(net, "conv5", (0, 0)) == receptive_field(full, "conv3", (0, 0))
        with pytest.raises(DeconvError, match="unknown layer 'conv3'.*valid layers are conv1, conv2, conv5"):
            dn.project(data.x[:1], "conv3", [0])


def test_tools_refuse_removed_fc_layers_in_one_line():
    net = zfnet(num_classes=10, input_size=64, width=0.25, fc_width=16, remove=(6, 7))
    with pytest.raises(ConfigError, match=r"unknown layer 'fc7': valid layers are conv1, conv2, conv3, conv4, conv5, fc8") as e:
        get_layer(net, "fc7")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="unknown layer 'fc6'"):
        top_activations(net, FakeInputs(n=2, size=64), layers=["fc6"], progress=False)
    assert isinstance(get_layer(net, "fc8"), nn.Linear)


def test_results_md_has_a_table3_section(tmp_path, monkeypatch):
    from zfrepro.io import write_results
    from zfrepro.results import results_markdown

    monkeypatch.setenv("ZFREPRO_RESULTS", str(tmp_path))
    assert "Table 3" not in results_markdown("x")
    table = summarize(_runs({"zfnet/baseline": (0.3, 0.4), "zfnet/maps-512-1024-512": (0.1, 0.3)}))
    claims = table3_claims(table)
    assert [c.paper for c in claims] == [True] * len(CLAIMS) and [c.name for c in claims] == list(CLAIMS.values())
    assert [c.holds for c in claims] == [check_claims(table)[c] for c in CLAIMS]
    write_results("09_ablations", {"budget": {"overrides": {"epochs": 3, "input_size": 96}, "seeds": [0, 1]},
                                   "table": table.to_dict(orient="records"), "claims": claims_json(claims)}, "x")
    md = results_markdown("x")
    assert "## Table 3 — ablations (3 epochs per run, 2 seeds per variant, 96-px crops" in md
    assert "| ZF model (Fig. 3) | Baseline | 30.5 / 33.1 | 40.5 ± 0.5 / 38.4 |" in md
    assert f"| {CLAIMS['wider_middle_layers_help_val']} | yes | zfnet/maps-512-1024-512 -10 | yes |" in md
    assert f"| {CLAIMS['removing_both_costs_most']} | yes | – | – |" in md
    assert f"| {CLAIMS['wider_middle_layers_raise_gap']} | yes | zfnet/baseline gap " in md
