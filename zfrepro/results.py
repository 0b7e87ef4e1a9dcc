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


def _multiplier(v: Any) -> str:
    """A learning-rate multiplier as a table cell: ``3``, ``32``; – where the results file has none."""
    return "–" if v is None else f"{float(v):g}"


class _Claims:
    """Every notebook's :class:`~zfrepro.claims.Claim` records (its results file's ``"claims"``), handed
    out by figure: :meth:`table` renders one figure's claims where its section stands, and
    :meth:`rest` the claims of figures that no section rendered (a notebook this module does not know)."""

    def __init__(self, r: dict[str, Any], output: str) -> None:
        from .claims import read_claims

        self.by_figure: dict[str, list[Any]] = {}
        for nb, values in r.items():
            records = values.get("claims") if isinstance(values, dict) else None
            for c in read_claims(records, f"results/{output}/{nb}.json"):
                self.by_figure.setdefault(c.figure, []).append(c)
        self.shown: set[str] = set()

    def table(self, *figures: str, header: str = "paper's claim") -> str:
        """The claims of ``figures`` as one "paper's claim | paper | ours | holds" table ("" if none)."""
        from .claims import format_value

        self.shown.update(figures)
        claims = [c for f in figures for c in self.by_figure.get(f, [])]
        if not claims:
            return ""
        return "\n\n" + _table([header, "paper", "ours", "holds"],
                                [[c.name, format_value(c.paper), format_value(c.ours), c.holds] for c in claims])

    def rest(self) -> list[str]:
        """A section per figure whose claims no section has rendered."""
        return [f"## {f} — claims" + self.table(f) + "\n" for f in list(self.by_figure) if f not in self.shown]


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
    claims = _Claims(r, output)
    a = r.get("01_architecture", {})
    if "fig3" in a:
        parts.append("## Fig. 3 — architecture\n\n" + _table(["", "paper", "ours"], [
            ["parameters (1000 classes)", "not stated", f"{a['fig3'].get('parameters', 0):,}"]]) + claims.table("Fig. 3") + "\n")
    if "fig6" in a:
        f6 = a["fig6"]
        rows = [[t.get("network"), _multiplier(t.get("conv1 lr ×", f6.get("first_lr_mult"))), t.get("val top-1"),
                 t.get("dead conv1 filters"), t.get("structure conv1"), t.get("unstructured conv1"), t.get("top-5% energy"),
                 t.get("max filter RMS"), t.get("HF share conv1 filters"),
                 t.get("aliased share conv1"), t.get("HF share conv2 projections")]
                for t in f6.get("table", [])]
        parts.append(f"## Fig. 6 — renormalisation and aliasing ({f6.get('epochs')} epochs each)\n\n" + _table(
            ["network", "conv1 lr ×", "val top-1", "faint conv1 filters", "structure R² conv1 (median)",
             "conv1 without structure", "top-5% filter energy", "largest filter RMS",
             "HF share conv1", "aliased share conv1", "HF share conv2 proj."],
            rows) + claims.table("Fig. 6") + "\n")
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
            ["layer", "maps", "active on val", "maps shown", "projection noise (median [IQR]; 1 = as smooth as its patch)",
             "projection alignment with its patch (median [IQR]; 1 = its edges, 0 = noise)", "against other units' patches"], [
                [k, v.get("maps"), v.get("active_on_val"), ", ".join(map(str, v.get("shown", []))), _iqr(v.get("projection_noise")),
                 _iqr((v.get("projection_alignment") or {}).get("matched")), _iqr((v.get("projection_alignment") or {}).get("control"))]
                for k, v in layers.items()]) + "\n")
        st = f.get("filter_structure")
        if st:
            parts.append(_table(["layer-1 filters (Gabor/blob fit of the dominant colour pattern)", "ours"], [
                [f"share with structure R² ≥ {st.get('threshold')}", _f(st.get("share_structured"), 2)],
                ["median R²", _f(st.get("median_r2"), 2)]]) + claims.table("Fig. 2") + "\n")
    e = r.get("04_training_evolution")
    if e:
        parts.append(f"## Fig. 4 — feature evolution (snapshots {e.get('epochs')})" + claims.table("Fig. 4") + "\n")
    v = r.get("05_invariance")
    if v:
        parts.append("## Fig. 5 — invariance" + claims.table("Fig. 5") + "\n")
    o = r.get("06_occlusion")
    if o:
        s = o.get("sensitivity", {})
        parts.append(f"## Fig. 7 — occlusion ({o.get('occluder')}-px square, stride {o.get('stride')}, "
                     f"{int(s.get('images', 0))} val images)\n\n" + _table(["", "paper", "ours (95% CI)"], [
                         ["drop of P(correct), most sensitive position", "large (qualitative)",
                          f"{_f(s.get('sensitive_mean'))} [{_f(s.get('sensitive_ci_low'))}, {_f(s.get('sensitive_ci_high'))}]"],
                         ["drop of P(correct), random position", "small (qualitative)",
                          f"{_f(s.get('random_mean'))} [{_f(s.get('random_ci_low'))}, {_f(s.get('random_ci_high'))}]"],
                         ["projection noise of column (c') (median [IQR])", "~1 (crisp)", _iqr(o.get("projection_noise"))],
                         ["projection alignment of column (c') with its patch / with the other patches (median [IQR])",
                          "1 / 0 (its own patch's edges)", f"{_iqr((o.get('projection_alignment') or {}).get('matched'))} / "
                          f"{_iqr((o.get('projection_alignment') or {}).get('control'))}"]])
                     + claims.table("Fig. 7") + "\n")
    c = r.get("07_correspondence")
    if c and c.get("skipped"):
        parts.append(f"## Table 1 — correspondence\n\n**Skipped** on this dataset: {c['skipped']}\n")
    elif c:
        rows = []
        for t in c.get("table", []):
            rows.append([t["part"], t["layer"], f"{_f(t.get('paper_mean'))} ± {_f(t.get('paper_std'))}",
                         f"{_f(t.get('mean'))} ± {_f(t.get('std'))}"])
        read = {True: "; conv layers max-pooled to the grid fc6 reads: conv5 is pool5's output",
                False: "; conv layers' whole maps"}.get(c.get("pooled"), "")
        parts.append(f"## Table 1 — correspondence ({c.get('faces')} annotated faces, draws of {c.get('n')}, "
                     f"{c.get('draws')} draws{read})\n\n" + _table(["part", "layer", "paper Δ", "ours Δ"], rows)
                     + claims.table("Table 1") + "\n")
    parts.extend(filter(None, [_transfer_section(r, claims)]))  # notebook 08
    parts.extend(filter(None, [_ablation_section(r, claims)]))  # notebook 09
    parts.extend(claims.rest())
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


def _transfer_section(r: dict[str, Any], claims: _Claims) -> str | None:
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
    return (head + _table(["method"] + [f"{w} {n}/class" for n in sizes for w in ("paper", "ours")], t4) + "\n\n"
            + note.rstrip("\n") + claims.table("Table 4", header="paper's claim (§5.2)") + "\n"
            + f"\n## Table 7 — a classifier on each layer (Caltech-101, {largest} per class)\n\n"
            + _table(["classifier (layer)", "paper", "ours"], rows7) + _dimensions_note(t.get("dimensions"))
            + claims.table("Table 7", header="paper's claim (§5.2)") + "\n")


def _dimensions_note(dims: dict[str, float] | None) -> str:
    """The line under Table 7: each layer's effective dimension on Caltech-101 (notebook 08)."""
    if not dims:
        return ""
    return ("\n\nEffective dimension of each layer's Caltech-101 features (participation ratio of the standardised "
            "features, `transfer.effective_dimension`: how many equally strong directions they spread over): "
            + ", ".join(f"{n} {v:.1f}" for n, v in dims.items()) + ".")


def _ablation_section(r: dict[str, Any], claims: _Claims) -> str | None:
    """Table 3 (notebook 09): per variant our train / val top-1 and val top-5 errors (mean over seeds, val
    ± half the seed spread) beside the paper's, and the claims of §4.1 on ours and on the paper's own table."""
    a = r.get("09_ablations") or {}
    if not a.get("table"):
        return None
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
    return (head + "\n" + table + claims.table("Table 3", header="paper's claim (§4.1); paper: holds on its own Table 3")
            + "\n")
