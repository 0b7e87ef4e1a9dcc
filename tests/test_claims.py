"""Claims owned by the analyses (issue #16, part 4): each module's claim test, its thresholds, and
RESULTS.md rendering them from the notebooks' JSON."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from zfrepro.aliasing import fig6_claims
from zfrepro.claims import Claim, claims_json, claims_rows, format_value, read_claims
from zfrepro.correspondence import PAPER_MARGINS, PARTS, part_margins, parts_below_random, table1_claims
from zfrepro.invariance import invariance_claims
from zfrepro.models import PAPER_MAP_SIZES, describe, map_size_claim, zfnet
from zfrepro.errors import ConfigError
from zfrepro.occlusion import RANDOM_RELATIVE_DROP, SENSITIVE_RELATIVE_DROP, occlusion_claim, relative_drop_claim
from zfrepro.results import results_markdown
from zfrepro.structure import STRUCTURED_SHARE, structure_claim
from zfrepro.top_units import evolution_claim


def test_map_size_claim_holds_at_224_only():
    sizes = lambda n: dict(zip(*(lambda t: (t["layer"], t["out_size"]))(describe(zfnet(num_classes=10, input_size=n, fc_width=16), n))))  # noqa: E731
    ok = map_size_claim(sizes(224))
    assert ok.holds and ok.ours == ok.paper == "110-55-26-13-13-13-13-6" and list(PAPER_MAP_SIZES)[-1] == "pool5"
    small = map_size_claim(sizes(128))
    assert small.holds is False and small.ours.startswith("62-")
    assert map_size_claim({}).ours == "-".join("?" * 8) and map_size_claim({}).holds is False


def test_fig6_claims_compare_the_three_networks():
    t = pd.DataFrame([
        {"network": "ZFNet", "val top-1": 0.8, "dead conv1 filters": 0.0, "top-5% energy": 0.1, "HF share conv2 projections": 0.2,
         "aliased share conv1": 0.01, "max filter RMS": 0.1,
         "structure conv1": 0.92, "unstructured conv1": 0.02},
        {"network": "ZFNet, no renormalisation", "val top-1": 0.7, "dead conv1 filters": 0.1, "top-5% energy": 0.3,
         "max filter RMS": 0.25},
        {"network": "AlexNet replica", "val top-1": 0.75, "dead conv1 filters": 0.2, "top-5% energy": 0.1,
         "HF share conv2 projections": 0.3, "aliased share conv1": 0.005, "max filter RMS": 0.1,
         "structure conv1": 0.87, "unstructured conv1": 0.06}]).set_index("network")
    claims = fig6_claims(t)
    assert [c.holds for c in claims] == [True, True, False, True]
    assert claims[2].ours == (0.005, 0.01) and all(c.figure == "Fig. 6" for c in claims)
    t.loc["AlexNet replica", "aliased share conv1"] = 0.04  # what the stride folds, not the projections' HF share
    assert fig6_claims(t)[2].holds
    # (b, c): more distinctive AND fewer without structure; either one alone fails
    assert claims[1].ours == {"structure": (0.92, 0.87), "unstructured": (0.02, 0.06)}
    t.loc["AlexNet replica", "unstructured conv1"] = 0.02
    assert fig6_claims(t)[1].holds is False
    t.loc["AlexNet replica", ["unstructured conv1", "structure conv1"]] = [0.06, 0.95]
    assert fig6_claims(t)[1].holds is False
    # (a) on another pair of rows (the runs at the paper's conv1 step), and untested where the cap never clipped
    pair = t.loc[["ZFNet, no renormalisation", "ZFNet"]].rename(index={"ZFNet, no renormalisation": "free", "ZFNet": "capped"})
    u = pd.concat([t, pair])
    u.loc["free", "top-5% energy"] = 0.05
    assert fig6_claims(u, renorm_pair=("free", "capped"))[0].holds is False
    assert fig6_claims(u)[0].holds is True
    u.loc["free", "max filter RMS"] = 0.097  # below the radius: with and without renormalisation are the same run
    a = fig6_claims(u, renorm_pair=("free", "capped"))[0]
    assert a.holds is None and "not tested" in a.name and "0.1" in a.name
    assert fig6_claims(u, renorm_pair=("free", "capped"), radius=0.05)[0].holds is False
    with pytest.raises(ConfigError, match="needs the networks AlexNet replica.*renorm_pair"):
        fig6_claims(u.drop(index="AlexNet replica"))
    with pytest.raises(ConfigError, match="needs the columns structure conv1"):
        fig6_claims(u.drop(columns="structure conv1"))


def test_occlusion_claim_thresholds():
    def drops(sensitive, random):
        return pd.DataFrame({"p0": [1.0, 1.0, 1.0], "drop_max": [sensitive] * 3, "drop_random": [random] * 3})

    rel, claim = occlusion_claim(drops(SENSITIVE_RELATIVE_DROP, RANDOM_RELATIVE_DROP))
    assert claim.holds and rel == {"sensitive": SENSITIVE_RELATIVE_DROP, "random": RANDOM_RELATIVE_DROP}
    assert occlusion_claim(drops(SENSITIVE_RELATIVE_DROP - 0.01, 0.0))[1].holds is False
    assert occlusion_claim(drops(1.0, RANDOM_RELATIVE_DROP + 0.01))[1].holds is False
    assert claim.name == "median relative drop ≥ 0.5 sensitive, ≤ 0.2 random"


def test_invariance_and_table1_and_structure_claims():
    claims = invariance_claims({"translate": True, "scale": False}, {"translate": 0.1, "scale": 0.2, "rotate": 0.3})
    assert [c.holds for c in claims] == [True, False, True] and claims[0].name == "small translate: layer 1 changes more than layer 7"
    assert invariance_claims({}, {"translate": 0.4, "scale": 0.2, "rotate": 0.3})[-1].holds is False
    assert invariance_claims({}, {})[-1].holds is None
    rows = [dict(part=p, layer=ly, mean=m) for ly, ms in (("conv5", (0.1, 0.1, 0.1, 0.2)), ("fc7", (0.1, 0.3, 0.1, 0.2)))
            for p, m in zip((*PARTS, "random"), ms)]
    below = parts_below_random(pd.DataFrame(rows), ["conv5", "fc7"])
    assert below["fc7"] == {"right_eye": True, "left_eye": False, "nose": True}
    margins = part_margins(pd.DataFrame(rows), ["conv5", "fc7"])
    assert margins == pytest.approx({"conv5": 0.5, "fc7": (0.2 - 0.5 / 3) / 0.2})
    five, seven = "conv5: every part below random", "fc7: the parts' lead over random at conv5 shrinks (lead: share of random's Δ)"
    assert claims_rows(table1_claims(below, margins)) == [[five, True], [seven, True]]
    # the paper's own Table 1 passes both; a lead that grows, or no lead at layer 5 to shrink, fails layer 7
    assert PAPER_MARGINS == pytest.approx({"conv5": 0.330, "fc7": 0.059}, abs=1e-3)
    assert [c.holds for c in table1_claims(below, PAPER_MARGINS)] == [True, True]
    assert [c.holds for c in table1_claims(below, {"conv5": 0.1, "fc7": 0.2})] == [True, False]
    assert [c.holds for c in table1_claims(below, {"conv5": -0.02, "fc7": -0.05})] == [True, False]
    assert [c.holds for c in table1_claims(below)] == [True, None]  # no margins: layer 7 not tested
    # a stand-in layer (a network without conv5) is judged as the paper's layer it stands for; other layers get no claim
    stand_in = table1_claims({"conv4": below["conv5"], "fc6": below["fc7"], "conv3": below["conv5"]},
                             {"conv4": 0.3, "fc6": 0.1, "conv3": 0.9}, paper_layers={"conv4": "conv5", "fc6": "fc7"})
    assert [(c.name.split(":")[0], c.holds) for c in stand_in] == [("conv4", True), ("fc6", True)]
    assert structure_claim({"share_structured": STRUCTURED_SHARE}).holds
    assert structure_claim({"share_structured": STRUCTURED_SHARE - 0.01}).holds is False
    assert structure_claim({"share_structured": float("nan")}).holds is None
    assert str(Claim("Fig. 9", "x", None, None, None)) == "Fig. 9: not tested: x"


def test_evolution_claim_compares_settling_epochs():
    # conv1 is final by epoch 2 (0.5 epochs to settle), conv5 at a constant pace (4.5): in any key order
    remaining = {10: {"conv1": 0.0, "conv5": 0.0}, 1: {"conv1": 1.0, "conv5": 1.0}, 2: {"conv1": 0.0, "conv5": 8 / 9}}
    remaining[5] = {"conv1": 0.0, "conv5": 5 / 9}
    claim = evolution_claim(remaining)
    assert claim.holds and claim.ours == (0.5, 4.5) and claim.figure == "Fig. 4"
    swapped = {e: {"conv1": r["conv5"], "conv5": r["conv1"]} for e, r in remaining.items()}
    assert evolution_claim(swapped).holds is False
    assert evolution_claim({str(e): r for e, r in remaining.items()}).holds  # JSON keys
    # two snapshots say nothing (every layer goes from 1 to 0); a missing layer is not tested
    assert evolution_claim({1: {"conv1": 1.0, "conv5": 1.0}, 2: {"conv1": 0.0, "conv5": 0.0}}).holds is None
    assert evolution_claim({}).holds is None and evolution_claim({e: {"conv1": 0.1} for e in (1, 2, 3)}).holds is None


def test_claims_json_round_trip_and_bad_records():
    claims = [Claim("Fig. 9", "x", (1, 2), {"a": np.float64(0.5)}, True), Claim("Fig. 9", "y", None, np.int64(3), None)]
    records = json.loads(json.dumps(claims_json(claims)))  # plain JSON: numpy scalars and tuples converted
    back = read_claims(records)
    assert [c.holds for c in back] == [True, None] and back[0].paper == [1, 2] and back[0].ours == {"a": 0.5}
    assert read_claims(None) == []
    with pytest.raises(ConfigError, match=r"^results/x/05\.json: 'claims' is not a list of claim records .*rerun"):
        read_claims({"old": True}, "results/x/05.json")
    with pytest.raises(ConfigError, match="keys figure, name, paper, ours, holds"):
        read_claims([{"name": "x", "holds": True}])
    assert [format_value(v) for v in (None, True, False, 0.123456, (1.0, 2.5), {"a": 1}, "t", float("nan"))] == [
        "–", "yes", "no", "0.123", "1 vs 2.5", "a 1", "t", "–"] and format_value({}) == format_value([]) == "–"


def test_results_md_renders_the_claims_from_the_json(tmp_path, monkeypatch):
    monkeypatch.setenv("ZFREPRO_RESULTS", str(tmp_path))
    out = tmp_path / "mine"
    out.mkdir()
    claims = invariance_claims({"rotate": True, "scale": False, "translate": True},
                               {"translate": 0.1, "scale": 0.5, "rotate": 0.3})
    (out / "05_invariance.json").write_text(json.dumps({"summary": [], "claims": claims_json(claims)}))
    (out / "06_occlusion.json").write_text(json.dumps({"sensitivity": {"images": 3.0}, "claims": claims_json(
        [relative_drop_claim({"sensitive": 0.9, "random": 0.3})])}))
    (out / "01_architecture.json").write_text(json.dumps({"fig3": {"sizes": PAPER_MAP_SIZES, "parameters": 5},
                                                          "claims": claims_json([map_size_claim(PAPER_MAP_SIZES)])}))
    (out / "10_mine.json").write_text(json.dumps({"claims": claims_json([Claim("Fig. 8", "new claim", "p", 0.5, False)])}))
    text = results_markdown("mine")
    assert "| small rotate: layer 1 changes more than layer 7 | Fig. 5 a2-c2: layer 1 changes a lot, layer 7 little | – | yes |" in text
    assert "| small scale: layer 1 changes more than layer 7 |" in text and text.count("**no**") == 4  # scale, stability, occlusion, Fig. 8
    assert "| output more stable to translation and scale than to rotation | " in text  # scale moves P most: no
    assert "| median relative drop ≥ 0.5 sensitive, ≤ 0.2 random | " in text and "sensitive 0.9, random 0.3 | **no** |" in text
    assert "| map sizes conv1…pool5 | 110-55-26-13-13-13-13-6 | 110-55-26-13-13-13-13-6 | yes |" in text
    # a notebook results.py does not know still gets its claims rendered, once
    assert "## Fig. 8 — claims\n\n| paper's claim | paper | ours | holds |" in text and text.count("new claim") == 1
    (out / "10_mine.json").write_text(json.dumps({"claims": {"old format": True}}))
    with pytest.raises(ConfigError, match="10_mine.json: 'claims' is not a list"):
        results_markdown("mine")
