"""Table 3 (§4.1) and Table 2's variant (b): which parts of the network matter, trained from scratch.

The grid is the paper's: seven variants of the replica of Krizhevsky et al. (baseline; layers 3,4,
7, 6,7 and 3,4,6,7 removed; fc6/fc7 at 2048 and 8192 units) and five of ZFNet (baseline; fc6/fc7
at 2048 and 8192; conv3-5 at 512-1024-512 maps; 8192 units with 512-1024-512 maps). Every variant
is a profile override of the package's :func:`zfrepro.train.train` (``fc_width``, ``conv_maps``,
``remove_layers``), scaled to the profile's widths: the paper's fc sizes 2048 / 4096 / 8192 become
``fc_width`` × 0.5 / 1 / 2 (512 / 1024 / 2048 for ``default``), its maps are multiplied by
``width`` (512-1024-512 → 256-512-256 at ×0.5). Each profile has a training budget
(:data:`BUDGETS`): for ``default`` a shortened recipe (smaller crops, a subset of the training
images, a few epochs) so that the 24 runs (12 variants × 2 seeds) take about half an hour on
2 CPU cores; for ``paper`` the profile itself (the paper's protocol, a GPU job).

What is measured per run, from its ``metrics.csv``: train top-1 error (the last epoch's running
error on the augmented training crops with dropout on — what a trainer reports, as the paper's
"train" column presumably is), val top-1 and top-5 errors (centre crop unless the budget asks
for 10 crops). :func:`summarize` averages over seeds (mean, and the spread max − min);
:func:`check_claims` tests §4.1's claims in numbers, on ours and on the paper's own table.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .config import Profile
from .errors import ConfigError

__all__ = ["Variant", "VARIANTS", "BUDGETS", "variant", "budget", "variant_overrides", "run_grid",
           "summarize", "paper_table", "check_claims", "table3_claims", "CLAIMS", "TABLE2_B", "variant_table", "plot_table3"]


@dataclass(frozen=True)
class Variant:
    """One row of Table 3 (or Table 2 b): how it differs from its family's baseline."""

    key: str                      # e.g. "alexnet/remove-3-4"
    arch: str                     # "alexnet" (the Krizhevsky replica) or "zfnet"
    label: str                    # the paper's row name
    fc_scale: float = 1.0         # fc6/fc7 units relative to the baseline's (paper 4096)
    conv_maps: tuple[int, ...] = ()  # conv1-5 maps at width 1 (paper units); (): the arch's own
    remove: tuple[int, ...] = ()  # layers removed
    paper: tuple[float, float, float] = (float("nan"),) * 3  # paper's train top-1, val top-1, val top-5 error %

    @property
    def family(self) -> str:
        return "Krizhevsky replica" if self.arch == "alexnet" else "ZF model (Fig. 3)"


_WIDE = (96, 256, 512, 1024, 512)

#: Table 3 of arXiv 1311.2901 v3, in the paper's order (error %: train top-1, val top-1, val top-5).
VARIANTS: tuple[Variant, ...] = (
    Variant("alexnet/baseline", "alexnet", "Baseline", paper=(35.1, 40.5, 18.1)),
    Variant("alexnet/remove-3-4", "alexnet", "Remove layers 3,4", remove=(3, 4), paper=(41.8, 45.4, 22.1)),
    Variant("alexnet/remove-7", "alexnet", "Remove layer 7", remove=(7,), paper=(27.4, 40.0, 18.4)),
    Variant("alexnet/remove-6-7", "alexnet", "Remove layers 6,7", remove=(6, 7), paper=(27.4, 44.8, 22.4)),
    Variant("alexnet/remove-3-4-6-7", "alexnet", "Remove layers 3,4,6,7", remove=(3, 4, 6, 7),
            paper=(71.1, 71.3, 50.1)),
    Variant("alexnet/fc-2048", "alexnet", "Layers 6,7 at 2048 units", fc_scale=0.5, paper=(40.3, 41.7, 18.8)),
    Variant("alexnet/fc-8192", "alexnet", "Layers 6,7 at 8192 units", fc_scale=2.0, paper=(26.8, 40.0, 18.1)),
    Variant("zfnet/baseline", "zfnet", "Baseline", paper=(33.1, 38.4, 16.5)),
    Variant("zfnet/fc-2048", "zfnet", "Layers 6,7 at 2048 units", fc_scale=0.5, paper=(38.2, 40.2, 17.6)),
    Variant("zfnet/fc-8192", "zfnet", "Layers 6,7 at 8192 units", fc_scale=2.0, paper=(22.0, 38.8, 17.0)),
    Variant("zfnet/maps-512-1024-512", "zfnet", "Layers 3,4,5 at 512,1024,512 maps", conv_maps=_WIDE,
            paper=(18.8, 37.5, 16.0)),
    Variant("zfnet/fc-8192-maps-512-1024-512", "zfnet", "8192 units + 512,1024,512 maps", fc_scale=2.0,
            conv_maps=_WIDE, paper=(10.0, 38.3, 16.9)),
)

#: Table 2 row (b), the 512-1024-512 network as one convnet: val top-1, val top-5, test top-5 error %.
TABLE2_B = {"val_top1": 37.5, "val_top5": 16.0, "test_top5": 16.1}

#: The training budget of the grid per profile: profile overrides shared by every run, plus the seeds.
#: ``default``: 96-px crops of 110-px images (the profile: 128 of 146), 500 training images per class
#: (5,000 of 9,469), 250 validation images per class (2,500 of 3,925), 3 epochs (the profile: 22) with
#: the one-cycle schedule over those 3 epochs, a centre crop for validation (the profile: 10 crops),
#: only the last epoch's snapshot; 2 seeds. Measured on 2 CPU cores: see the notebook's first cell.
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {"overrides": dict(epochs=1, snapshot_epochs=()), "seeds": (0,)},
    "default": {"overrides": dict(input_size=96, resize=110, train_per_class=500, val_per_class=250, epochs=3,
                                  eval_crops=1, snapshot_epochs=()), "seeds": (0, 1)},
    "paper": {"overrides": dict(snapshot_epochs=()), "seeds": (0, 1)},
}


def variant(key: str) -> Variant:
    """The variant called ``key`` (e.g. ``"zfnet/maps-512-1024-512"``)."""
    for v in VARIANTS:
        if v.key == key:
            return v
    raise ConfigError(f"unknown Table 3 variant {key!r}: use one of {', '.join(v.key for v in VARIANTS)}")


def budget(profile: str | Profile, *, epochs: int = 0, seeds: int = 0) -> dict[str, Any]:
    """``{"overrides": {...}, "seeds": (...)}``: the profile's grid budget (:data:`BUDGETS`; a profile
    without one trains with its own recipe and 2 seeds); ``epochs`` / ``seeds`` > 0 replace the
    budget's epochs / number of seeds."""
    name = profile.name if isinstance(profile, Profile) else str(profile)
    b = BUDGETS.get(name, {"overrides": dict(snapshot_epochs=()), "seeds": (0, 1)})
    over, sd = dict(b["overrides"]), tuple(b["seeds"])
    if epochs < 0 or seeds < 0:
        raise ConfigError(f"epochs and seeds must be >= 0 (0: the budget's), got {epochs} and {seeds}")
    if epochs:
        over["epochs"] = int(epochs)
    if seeds:
        sd = tuple(range(int(seeds)))
    return {"overrides": over, "seeds": sd}


def variant_overrides(v: Variant, prof: Profile) -> dict[str, Any]:
    """The profile fields that make ``v`` out of ``prof``'s network (fc width scaled by ``fc_scale``)."""
    out: dict[str, Any] = {}
    if v.fc_scale != 1.0:
        out["fc_width"] = max(1, int(round(prof.fc_width * v.fc_scale)))
    if v.conv_maps:
        out["conv_maps"] = tuple(v.conv_maps)
    if v.remove:
        out["remove_layers"] = tuple(v.remove)
    return out


def _select(keys: Sequence[str] | str | None) -> list[Variant]:
    if keys is None or keys == "" or keys == []:
        return list(VARIANTS)
    if isinstance(keys, str):
        keys = [k.strip() for k in keys.split(",") if k.strip()]
    return [variant(k) for k in keys]


def run_grid(profile: str | Profile = "default", *, variants: Sequence[str] | str | None = None,
             epochs: int = 0, seeds: int = 0, data_root: str | Path | None = None, device: str = "auto",
             progress: bool = True) -> "Any":
    """Train (or, when already trained, just read) every variant × seed of the profile's budget with
    :func:`zfrepro.train.train`; one row per run (pandas DataFrame): key, arch, label, seed, fc_width,
    conv maps at the profile's width, parameters, train/val errors (fractions), seconds, run_dir.
    Prints one line per run to stderr (and the time of a newly trained one)."""
    import pandas as pd

    from .config import get_profile, resolve_profile
    from .runs import list_snapshots, read_metrics, run_dir_for
    from .train import build_network, train

    base = get_profile(profile) if isinstance(profile, str) else profile
    b = budget(base, epochs=epochs, seeds=seeds)
    chosen = _select(variants)
    rows = []
    todo = [(v, s) for v in chosen for s in b["seeds"]]
    t_all = time.perf_counter()
    for i, (v, seed) in enumerate(todo, 1):
        over = {**b["overrides"], **variant_overrides(v, base), "seed": seed}
        prof, arch = resolve_profile(base, v.arch, **over)
        run_dir = run_dir_for(base, v.arch, data_root=data_root, **over)
        done_before = prof.epochs in list_snapshots(run_dir)
        t0 = time.perf_counter()
        train(base, arch=v.arch, data_root=data_root, device=device, progress=False, **over)
        wall = time.perf_counter() - t0
        m = read_metrics(run_dir)
        last = m.iloc[-1]
        try:
            classes = int(json.loads((run_dir / "profile.json").read_text())["num_classes"])
        except (OSError, ValueError, KeyError):
            classes = 10
        net = build_network(prof, arch, classes)
        convs = [c.out_channels for n, c in net.features.named_children() if n.startswith("conv")]
        row = dict(key=v.key, arch=v.arch, family=v.family, label=v.label, seed=seed, fc_width=prof.fc_width,
                   conv_maps="-".join(map(str, convs)), removed=",".join(map(str, v.remove)),
                   params=sum(p.numel() for p in net.parameters()), epochs=int(last["epoch"]),
                   train_top1_err=1.0 - float(last["train_top1"]), val_top1_err=1.0 - float(last["val_top1"]),
                   val_top5_err=1.0 - float(last["val_top5"]), val_crops=int(last["val_crops"]),
                   seconds=float(m["seconds"].sum()), run_dir=str(run_dir))
        rows.append(row)
        if progress:
            how = "already trained" if done_before else f"trained in {wall:.0f} s"
            print(f"[{i}/{len(todo)}] {v.key} seed {seed}: {how}; train top-1 err {row['train_top1_err']:.3f}, "
                  f"val top-1 err {row['val_top1_err']:.3f} ({time.perf_counter() - t_all:.0f} s elapsed)",
                  file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


_METRICS = ("train_top1_err", "val_top1_err", "val_top5_err")


def summarize(runs: "Any") -> "Any":
    """Per variant (the paper's order): mean over seeds of each error (%), its spread (max − min, %),
    the train/val gap (val top-1 − train top-1, %), the paper's three values, and the mean training time."""
    import pandas as pd

    order = [v.key for v in VARIANTS]
    out = []
    for key, g in runs.groupby("key", sort=False):
        v = variant(key)
        row: dict[str, Any] = dict(key=key, family=v.family, variant=v.label, fc_width=int(g.fc_width.iloc[0]),
                                   conv_maps=g.conv_maps.iloc[0], params=int(g.params.iloc[0]), seeds=len(g))
        for c in _METRICS:
            row[c] = 100.0 * float(g[c].mean())
            row[c + "_spread"] = 100.0 * float(g[c].max() - g[c].min())
        row["gap"] = row["val_top1_err"] - row["train_top1_err"]
        row["paper_train_top1_err"], row["paper_val_top1_err"], row["paper_val_top5_err"] = v.paper
        row["paper_gap"] = v.paper[1] - v.paper[0]
        row["seconds"] = float(g.seconds.mean())
        out.append(row)
    df = pd.DataFrame(out)
    df["_o"] = df.key.map(order.index)
    return df.sort_values("_o").drop(columns="_o").reset_index(drop=True)


def paper_table() -> "Any":
    """The paper's Table 3 in :func:`summarize`'s columns (spread 0), for :func:`check_claims`."""
    import pandas as pd

    rows = []
    for v in VARIANTS:
        rows.append(dict(key=v.key, family=v.family, variant=v.label, train_top1_err=v.paper[0],
                         val_top1_err=v.paper[1], val_top5_err=v.paper[2], train_top1_err_spread=0.0,
                         val_top1_err_spread=0.0, val_top5_err_spread=0.0, gap=v.paper[1] - v.paper[0]))
    return pd.DataFrame(rows)


#: §4.1's claims as tested by :func:`check_claims` (val top-1 error; "within noise": at most
#: max(2 points, twice the larger seed spread of the two rows compared)).
CLAIMS = {
    "fc_removal_costs_little": "removing layer 7 costs no more than noise, and removing layers 6,7 less than half "
                               "of what removing layers 3,4,6,7 costs (Krizhevsky replica)",
    "middle_conv_removal_costs_more": "removing layers 3,4 costs more than removing layers 6,7 (Krizhevsky replica)",
    "removing_both_costs_most": "removing layers 3,4,6,7 gives the highest val error of the replica's variants",
    "fc_width_makes_little_difference": "fc6/fc7 at 2048 or 8192 units changes val error by no more than noise "
                                        "(both families)",
    "wider_middle_layers_help_val": "ZFNet with 512-1024-512 maps has a lower val error than the baseline",
    "wider_middle_layers_raise_gap": "ZFNet with 512-1024-512 maps has a larger train/val gap than the baseline",
    "wider_fc_and_maps_overfit": "8192 units + 512-1024-512 maps has a larger train/val gap than 512-1024-512 alone",
}


def check_claims(table: "Any") -> dict[str, Any]:
    """§4.1's claims (:data:`CLAIMS`) on a :func:`summarize` (or :func:`paper_table`) table: a plain dict
    ``{claim: True/False/None}`` (None where a variant it needs is missing), plus ``"deltas"``: each
    variant's val top-1 error minus its family baseline's (points), and ``"noise"`` per claim."""
    t = table.set_index("key")

    def has(*keys: str) -> bool:
        return all(k in t.index for k in keys)

    def err(k: str) -> float:
        return float(t.loc[k, "val_top1_err"])

    def d(k: str) -> float:
        base = k.split("/")[0] + "/baseline"
        return err(k) - err(base)

    def noise(*keys: str) -> float:
        return max([2.0] + [2.0 * float(t.loc[k, "val_top1_err_spread"]) for k in keys])

    deltas = {k: d(k) for k in t.index if has(k.split("/")[0] + "/baseline")}
    out: dict[str, Any] = {c: None for c in CLAIMS}
    a = "alexnet/"
    if has(a + "baseline", a + "remove-7", a + "remove-6-7", a + "remove-3-4-6-7"):
        out["fc_removal_costs_little"] = bool(abs(d(a + "remove-7")) <= noise(a + "baseline", a + "remove-7")
                                              and d(a + "remove-6-7") < 0.5 * d(a + "remove-3-4-6-7"))
    if has(a + "baseline", a + "remove-3-4", a + "remove-6-7"):
        out["middle_conv_removal_costs_more"] = bool(d(a + "remove-3-4") > d(a + "remove-6-7"))
    fam_a = [k for k in t.index if k.startswith(a)]
    if has(a + "remove-3-4-6-7") and len(fam_a) > 1:
        out["removing_both_costs_most"] = bool(all(err(a + "remove-3-4-6-7") > err(k) for k in fam_a
                                                   if k != a + "remove-3-4-6-7"))
    fc = [k for k in ("alexnet/fc-2048", "alexnet/fc-8192", "zfnet/fc-2048", "zfnet/fc-8192")
          if has(k, k.split("/")[0] + "/baseline")]
    if fc:
        out["fc_width_makes_little_difference"] = bool(all(abs(d(k)) <= noise(k, k.split("/")[0] + "/baseline")
                                                           for k in fc))
    z = "zfnet/"
    if has(z + "baseline", z + "maps-512-1024-512"):
        out["wider_middle_layers_help_val"] = bool(err(z + "maps-512-1024-512") < err(z + "baseline"))
        out["wider_middle_layers_raise_gap"] = bool(float(t.loc[z + "maps-512-1024-512", "gap"])
                                                    > float(t.loc[z + "baseline", "gap"]))
    if has(z + "maps-512-1024-512", z + "fc-8192-maps-512-1024-512"):
        out["wider_fc_and_maps_overfit"] = bool(float(t.loc[z + "fc-8192-maps-512-1024-512", "gap"])
                                                > float(t.loc[z + "maps-512-1024-512", "gap"]))
    out["deltas"] = {k: round(v, 2) for k, v in deltas.items()}
    return out


def table3_claims(table: "Any", paper: "Any | None" = None) -> list[Any]:
    """§4.1's claims (:data:`CLAIMS`, tested by :func:`check_claims`) on our :func:`summarize` table as
    :class:`~zfrepro.claims.Claim` records: ``paper`` is whether the same test holds on the paper's own
    Table 3 (:func:`paper_table`, or ``paper``), ``ours`` our val top-1 error of each variant the claim
    compares minus its family baseline's (points), or for the train/val gap claims each variant's gap."""
    from .claims import Claim

    ours, theirs = check_claims(table), check_claims(paper if paper is not None else paper_table())
    involved = {
        "fc_removal_costs_little": ("alexnet/remove-7", "alexnet/remove-6-7", "alexnet/remove-3-4-6-7"),
        "middle_conv_removal_costs_more": ("alexnet/remove-3-4", "alexnet/remove-6-7"),
        "removing_both_costs_most": ("alexnet/remove-3-4-6-7",),
        "fc_width_makes_little_difference": ("alexnet/fc-2048", "alexnet/fc-8192", "zfnet/fc-2048", "zfnet/fc-8192"),
        "wider_middle_layers_help_val": ("zfnet/maps-512-1024-512",),
        "wider_middle_layers_raise_gap": ("zfnet/maps-512-1024-512",),
        "wider_fc_and_maps_overfit": ("zfnet/maps-512-1024-512", "zfnet/fc-8192-maps-512-1024-512"),
    }
    gaps = table.set_index("key")["gap"].round(2).to_dict() if "gap" in table else {}
    gap_claims = {"wider_middle_layers_raise_gap": ("zfnet/baseline", "zfnet/maps-512-1024-512"),
                  "wider_fc_and_maps_overfit": involved["wider_fc_and_maps_overfit"]}
    return [Claim("Table 3", text, theirs[c],
                  {f"{k} gap": gaps[k] for k in gap_claims[c] if k in gaps} if c in gap_claims else
                  {k: ours["deltas"][k] for k in involved[c] if k in ours["deltas"]}, ours[c])
            for c, text in CLAIMS.items()]


def variant_table(profile: str | Profile = "default", num_classes: int = 10) -> "Any":
    """Each variant's network at the paper's width (224 px, 1000 classes) and at the profile's
    (its ``width``, scaled ``fc_width``, the grid budget's ``input_size``, ``num_classes``): conv maps,
    fc units, removed layers and parameters, computed from the real modules (built on the meta device)."""
    import pandas as pd
    import torch

    from .config import get_profile
    from .models import build_model

    prof = get_profile(profile) if isinstance(profile, str) else profile
    size = int(budget(prof)["overrides"].get("input_size", prof.input_size))
    paper = get_profile("paper")
    rows = []
    for v in VARIANTS:
        nets = {}
        for tag, p, n, s in (("paper", paper, 1000, 224), ("ours", prof, num_classes, size)):
            o = variant_overrides(v, p)
            kw = dict(fc_width=o.get("fc_width", p.fc_width), conv_maps=o.get("conv_maps"),
                      remove=o.get("remove_layers", ()))
            with torch.device("meta"):
                nets[tag] = build_model(v.arch, num_classes=n, input_size=s, width=p.width, **kw)
        row: dict[str, Any] = dict(key=v.key, family=v.family, variant=v.label,
                                   removed=",".join(map(str, v.remove)) or "–")
        for tag, net in nets.items():
            convs = [c.out_channels for n_, c in net.features.named_children() if n_.startswith("conv")]
            fcs = [m.out_features for n_, m in net.classifier.named_children() if n_ in ("fc6", "fc7")]
            row[f"{tag} conv maps"] = "-".join(map(str, convs))
            row[f"{tag} fc6/fc7"] = "/".join(map(str, fcs)) or "–"
            row[f"{tag} params"] = sum(q.numel() for q in net.parameters())
        rows.append(row)
    return pd.DataFrame(rows)


_SHORT = {"baseline": "baseline", "remove-3-4": "remove 3,4", "remove-7": "remove 7", "remove-6-7": "remove 6,7",
          "remove-3-4-6-7": "remove 3,4,6,7", "fc-2048": "fc 2048", "fc-8192": "fc 8192",
          "maps-512-1024-512": "maps 512-1024-512", "fc-8192-maps-512-1024-512": "fc 8192 +\nmaps 512-1024-512"}


def plot_table3(summary: "Any", title: str = "") -> "Any":
    """Table 3 as a figure, one column per family. Top: per variant our val top-1 error (bar, with half
    the seed spread as a whisker) and train top-1 error (dot) beside the paper's (hatched bar, cross), in
    %; the levels differ (10 vs 1000 classes, minutes vs days of training). Bottom: what is tested, each
    variant's val top-1 error minus its family baseline's, ours beside the paper's (points). Variant
    names are the paper's (its fc units and maps; ours are scaled by the profile)."""
    import numpy as np

    from .plotting import new_figure

    fams = [f for f in ("Krizhevsky replica", "ZF model (Fig. 3)") if (summary.family == f).any()]
    fig = new_figure((12, 7.4))
    axes = np.asarray(fig.subplots(2, max(1, len(fams)), sharey="row", squeeze=False,
                                   width_ratios=[max(1, int((summary.family == f).sum())) for f in fams] or None))
    for col, fam in enumerate(fams):
        t = summary[summary.family == fam].reset_index(drop=True)
        x = np.arange(len(t))
        names = [_SHORT.get(k.split("/", 1)[1], k) for k in t.key]
        ax = axes[0, col]
        ax.bar(x - 0.2, t.val_top1_err, 0.4, yerr=t.val_top1_err_spread / 2, capsize=3, color="tab:blue",
               label="ours: val top-1 error (whisker: half the seed spread)")
        ax.plot(x - 0.2, t.train_top1_err, "o", color="k", label="ours: train top-1 error")
        ax.bar(x + 0.2, t.paper_val_top1_err, 0.4, color="white", edgecolor="tab:orange", hatch="//",
               label="paper: val top-1 error")
        ax.plot(x + 0.2, t.paper_train_top1_err, "x", color="tab:red", mew=2, label="paper: train top-1 error")
        ax.set_xticks(x, [])
        ax.set_title(fam)
        ax.grid(axis="y", alpha=0.3)
        ax = axes[1, col]
        base = t[t.key.str.endswith("/baseline")]
        ob = float(base.val_top1_err.iloc[0]) if len(base) else float("nan")
        pb = float(base.paper_val_top1_err.iloc[0]) if len(base) else float("nan")
        ax.bar(x - 0.2, t.val_top1_err - ob, 0.4, yerr=t.val_top1_err_spread / 2, capsize=3, color="tab:blue",
               label="ours")
        ax.bar(x + 0.2, t.paper_val_top1_err - pb, 0.4, color="white", edgecolor="tab:orange", hatch="//",
               label="paper")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("error %")
    axes[1, 0].set_ylabel("val top-1 error − baseline's (points)")
    top = np.nanmax(np.r_[summary.val_top1_err + summary.val_top1_err_spread / 2, summary.train_top1_err,
                          summary.paper_val_top1_err, summary.paper_train_top1_err])
    axes[0, 0].set_ylim(0, 1.3 * top)
    axes[0, 0].legend(fontsize=7, loc="upper left", ncol=2, framealpha=0.9)
    axes[1, 0].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title)
    return fig
