"""``results/<output>/RESULTS.md``: one table per paper figure or table — the paper's value, ours, and
whether the paper's claim holds for ours — built from the JSON files the notebooks write
(:func:`zfrepro.io.write_results`). ``zfrepro reproduce`` writes it at the end of a run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .io import atomic_write_text, results_dir

__all__ = ["results_markdown", "write_results_md"]


def _load(output: str) -> dict[str, Any]:
    out = {}
    for p in sorted(results_dir(output).glob("*.json")):
        try:
            out[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
    return out


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _iqr(s: Any) -> str:
    """``median [q25, q75]`` of a :func:`zfrepro.aliasing.summarize` dict, or "–"."""
    if not isinstance(s, dict):
        return "–"
    return f"{_f(s.get('median'), 2)} [{_f(s.get('q25'), 2)}, {_f(s.get('q75'), 2)}]"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_f(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _claims_table(claims: list[Any], header: str = "paper's claim") -> str:
    """A "paper's claim | holds" table of :class:`~zfrepro.claims.Claim` records."""
    from .claims import claims_rows

    return _table([header, "holds"], claims_rows(claims))


def results_markdown(output: str = "default", notes: dict[str, str] | None = None) -> str:
    """The RESULTS.md text of output name ``output`` (``results/<output>/``: ``default``, ``smoke``,
    ``smoke-k_3``...; sections for the notebooks that have written results).
    ``notes`` maps a notebook (``"07_correspondence"``) to why it did not run in this run (``"failed: ..."``,
    ``"skipped: ..."``): listed first, so a table that is missing or older than the rest says why."""
    r = _load(output)
    parts = [f"# Results of the `{output}` profile beside the paper\n",
             "Written by `zfrepro reproduce` from `results/" + output + "/*.json`. \"Holds\" says whether the "
             "paper's claim holds for our network, by the test stated in the notebook.\n"]
    if notes:
        parts.append("**Not run in the last run:**\n\n" + "\n".join(
            f"- `{nb}`: {why}" + (" (its section below, if any, is from an earlier run)" if nb in r else "")
            for nb, why in notes.items()) + "\n")
    model = next((v for v in r.values() if isinstance(v, dict) and v.get("arch")), None)
    if model:
        parts.append(f"Model: `{model['arch']}`, " + (f"weights `{model['weights']}`" if model.get("weights")
                                                       else "the profile's own trained run") + ".\n")
    a = r.get("01_architecture", {})
    if "fig3" in a:
        from .models import map_size_claim

        sizes = map_size_claim(a["fig3"].get("sizes", {}))
        parts.append("## Fig. 3 — architecture\n\n" + _table(["", "paper", "ours", "holds"], [
            [sizes.name, sizes.paper, sizes.ours, sizes.holds],
            ["parameters (1000 classes)", "not stated", f"{a['fig3'].get('parameters', 0):,}", None]]) + "\n")
    if "fig6" in a:
        f6 = a["fig6"]
        rows = [[t.get("network"), t.get("val top-1"), t.get("dead conv1 filters"), t.get("top-5% energy"),
                 t.get("HF share conv1 filters"), t.get("HF share conv2 projections")] for t in f6.get("table", [])]
        parts.append(f"## Fig. 6 — renormalisation and aliasing ({f6.get('epochs')} epochs each)\n\n" + _table(
            ["network", "val top-1", "dead conv1 filters", "top-5% filter energy", "HF share conv1", "HF share conv2 proj."],
            rows) + "\n\n" + _table(["paper's claim", "holds"], [[k, v] for k, v in f6.get("claims", {}).items()]) + "\n")
    d = r.get("02_deconvnet")
    if d:
        parts.append("## Fig. 1 — deconvnet\n\n" + _table(["check", "expected", "ours"], [
            ["explicit deconvnet vs autograd deconvnet rule (relative error)", "0", d.get("relative_error_vs_autograd_deconvnet_rule")],
            ["same top signal through two images' switches (relative difference)", "> 0 (§2.1: not samples from the model)",
             d.get("same_signal_two_images_relative_difference")],
            ["projection noise of the unit (HF share over its patch's)", "~1 (crisp, Fig. 1)", _f(d.get("projection_noise"), 2)]]) + "\n")
    f = r.get("03_feature_visualization")
    if f:
        layers = f.get("layers", {})
        parts.append("## Fig. 2 — top-9 feature visualisation\n\n" + _table(
            ["layer", "maps", "active on val", "maps shown", "projection noise (median [IQR]; 1 = as smooth as its patch)"], [
                [k, v.get("maps"), v.get("active_on_val"), ", ".join(map(str, v.get("shown", []))), _iqr(v.get("projection_noise"))]
                for k, v in layers.items()]) + "\n")
        st = f.get("filter_structure")
        if st:
            from .structure import structure_claim

            claim = structure_claim(st)
            parts.append(_table(["layer-1 filters (Gabor/blob fit of the dominant colour pattern)", "paper", "ours"], [
                [f"share with structure R² ≥ {st.get('threshold')}", claim.paper, _f(st.get("share_structured"), 2)],
                ["median R²", "–", _f(st.get("median_r2"), 2)]]) + "\n\n" + _claims_table([claim]) + "\n")
    e = r.get("04_training_evolution")
    if e:
        parts.append(f"## Fig. 4 — feature evolution (snapshots {e.get('epochs')})\n\n" + _table(["paper's claim", "holds"], [
            ["lower layers settle before upper ones (filter change over the last interval, conv1 < conv5)",
             e.get("lower_layers_settle_first")]]) + "\n")
    v = r.get("05_invariance")
    if v:
        from .invariance import invariance_claims

        parts.append("## Fig. 5 — invariance\n\n" + _claims_table(invariance_claims(
            v.get("layer1_moves_more_than_layer7", {}),
            {r["transformation"]: r["mean |ΔP(true)| over the range"] for r in v.get("summary", [])})) + "\n")
    o = r.get("06_occlusion")
    if o:
        from .occlusion import occlusion_claim_name

        s = o.get("sensitivity", {})
        parts.append(f"## Fig. 7 — occlusion ({o.get('occluder')}-px square, stride {o.get('stride')}, "
                     f"{int(s.get('images', 0))} val images)\n\n" + _table(["", "paper", "ours (95% CI)"], [
                         ["drop of P(correct), most sensitive position", "large (qualitative)",
                          f"{_f(s.get('sensitive_mean'))} [{_f(s.get('sensitive_ci_low'))}, {_f(s.get('sensitive_ci_high'))}]"],
                         ["drop of P(correct), random position", "small (qualitative)",
                          f"{_f(s.get('random_mean'))} [{_f(s.get('random_ci_low'))}, {_f(s.get('random_ci_high'))}]"],
                         ["projection noise of column (c') (median [IQR])", "~1 (crisp)", _iqr(o.get("projection_noise"))],
                         [f"claim holds ({occlusion_claim_name()})", "yes", o.get("claim_holds")]]) + "\n")
    c = r.get("07_correspondence")
    if c and c.get("skipped"):
        parts.append(f"## Table 1 — correspondence\n\n**Skipped** on this dataset: {c['skipped']}\n")
    elif c:
        rows = []
        for t in c.get("table", []):
            rows.append([t["part"], t["layer"], f"{_f(t.get('paper_mean'))} ± {_f(t.get('paper_std'))}",
                         f"{_f(t.get('mean'))} ± {_f(t.get('std'))}"])
        from .correspondence import table1_claims

        below = c.get("parts_below_random", {})
        parts.append(f"## Table 1 — correspondence ({c.get('faces')} annotated faces, draws of {c.get('n')}, "
                     f"{c.get('draws')} draws)\n\n" + _table(["part", "layer", "paper Δ", "ours Δ"], rows) + "\n\n"
                     + _claims_table(table1_claims(below), "paper's claim: every part below random") + "\n")
    parts.extend(filter(None, [_transfer_section(r)]))  # notebook 08
    parts.extend(filter(None, [_ablation_section(r)]))  # notebook 09
    return "\n".join(parts)


def write_results_md(output: str = "default", notes: dict[str, str] | None = None) -> Path:
    """Write ``results/<output>/RESULTS.md`` (atomically) and return its path; ``notes``: see
    :func:`results_markdown`."""
    return atomic_write_text(results_markdown(output, notes), results_dir(output) / "RESULTS.md")


def _pm(v: dict[str, Any] | None) -> str:
    """``mean ± std`` of a fold summary, with the number of folds when it is not 5."""
    if not isinstance(v, dict) or v.get("mean") is None:
        return "–"
    n = len(v.get("folds", []))
    return f"{v['mean']:.1f} ± {v.get('std', 0.0):.1f}" + ("" if n == 5 else f" ({n} fold{'' if n == 1 else 's'})")


def _transfer_section(r: dict[str, Any]) -> str | None:
    """Tables 4 and 7 (notebook 08): Caltech-101 mean per-class accuracy, ours beside the paper's."""
    t = r.get("08_feature_generalization") or {}
    if not t.get("table7"):
        return None
    from .transfer import PAPER_TABLE4, PAPER_TABLE7

    plan, ov = t.get("plan", {}), t.get("overlap", {})
    sizes = sorted({int(n) for row in t.get("table4", {}).values() for n in row})
    t4 = [[row] + [x for n in sizes for x in (
        "{:.1f} ± {:.1f}".format(*PAPER_TABLE4[row][n]) if n in PAPER_TABLE4.get(row, {}) else "–",
        _pm(t["table4"].get(row, {}).get(str(n)) or t["table4"].get(row, {}).get(n)))]
          for row in ("non-pretrained", "pretrained") if row in t.get("table4", {})]
    largest = max(sizes) if sizes else 30
    rows7 = []
    for kind in dict.fromkeys(x["kind"] for x in t["table7"]):
        for i, x in enumerate([x for x in t["table7"] if x["kind"] == kind], start=1):
            paper = PAPER_TABLE7.get((kind, i)) if largest == 30 else None
            rows7.append([f"{kind} ({i}: {x['layer']})", "{:.1f} ± {:.1f}".format(*paper) if paper else "–", _pm(x)])
    head = (f"## Table 4 — Caltech-101 ({t.get('categories')} categories, {plan.get('folds')} folds, up to "
            f"{plan.get('test_per_class')} test images per class; mean per-class accuracy %)\n\n")
    note = (f"Overlap with the network's training images (§5.2: 44 of 9,144 in the paper): {ov.get('count')} of "
            f"{t.get('images')} at thumbnail correlation ≥ {ov.get('threshold')} (highest {_f(ov.get('max_correlation'))}), "
            "kept out of the test folds. The non-pretrained row trains the same architecture from scratch, with the "
            "same number of updates at every size (" + ", ".join(
                f"{(t.get('table4', {}).get('non-pretrained', {}).get(str(n)) or {}).get('epochs', '?')} epochs at {n}/class"
                for n in sizes) + f"), on {plan.get('scratch_folds')} fold(s).\n")
    claims = _table(["paper's claim (§5.2)", "holds"], [[k, v] for k, v in t.get("claims", {}).items()])
    return (head + _table(["method"] + [f"{w} {n}/class" for n in sizes for w in ("paper", "ours")], t4) + "\n\n"
            + note + f"\n## Table 7 — a classifier on each layer (Caltech-101, {largest} per class)\n\n"
            + _table(["classifier (layer)", "paper", "ours"], rows7) + "\n\n" + claims + "\n")


def _ablation_section(r: dict[str, Any]) -> str | None:
    """Table 3 (notebook 09): per variant our train / val top-1 and val top-5 errors (mean over seeds, val
    ± half the seed spread) beside the paper's, and the claims of §4.1 on ours and on the paper's own table."""
    a = r.get("09_ablations") or {}
    if not a.get("table"):
        return None
    from .ablation import CLAIMS

    b = a.get("budget", {})
    over, n_seeds = b.get("overrides", {}), len(b.get("seeds", []))
    ep = over.get("epochs", "?")
    head = (f"## Table 3 — ablations ({ep} epoch{'' if ep == 1 else 's'} per run, {n_seeds} seed"
            f"{'' if n_seeds == 1 else 's'} per variant"
            + (f", {over['input_size']}-px crops" if "input_size" in over else "")
            + (f", {over['train_per_class']} train images per class" if over.get("train_per_class") else "")
            + "; errors in %)\n")
    rows = [[t.get("family"), t.get("variant"),
             f"{_f(t.get('train_top1_err'), 1)} / {_f(t.get('paper_train_top1_err'), 1)}",
             f"{_f(t.get('val_top1_err'), 1)} ± {_f((t.get('val_top1_err_spread') or 0.0) / 2, 1)} / "
             f"{_f(t.get('paper_val_top1_err'), 1)}",
             f"{_f(t.get('val_top5_err'), 1)} / {_f(t.get('paper_val_top5_err'), 1)}"] for t in a["table"]]
    table = _table(["family", "variant", "train top-1 (ours / paper)", "val top-1 (ours ± half the seed spread / paper)",
                    "val top-5 (ours / paper)"], rows)
    ours, paper, text = a.get("claims", {}), a.get("paper_claims", {}), a.get("claim_text", {})
    order = [c for c in CLAIMS if c in ours] + [c for c in ours if c not in CLAIMS]
    claims = _table(["paper's claim (§4.1)", "holds on the paper's table", "holds for ours"],
                    [[text.get(c, c), paper.get(c), ours[c]] for c in order])
    return head + "\n" + table + "\n\n" + claims + "\n"
