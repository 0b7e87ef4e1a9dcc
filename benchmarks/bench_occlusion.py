"""Occlusion maps (Fig. 7) per second: ``zfrepro.occlusion.occlusion_maps`` (incremental inference)
against ``captum.attr.Occlusion`` with its best ``perturbations_per_eval``, same window, stride and
baseline, side by side in one run (alternating rounds, so that other load on a shared machine hits
both alike). Also reported: our brute-force path (whole occluded images, batched), and the largest
difference between the incremental and the brute-force maps — the speed-up must not cost exactness.
Goal: ≥ 1.5× captum.

    python benchmarks/bench_occlusion.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zfrepro.config import get_profile  # noqa: E402
from zfrepro.models import init_weights, zfnet  # noqa: E402
from zfrepro.occlusion import occluder_positions, occlusion_maps  # noqa: E402

GOAL = 1.5


def _setups(quick: bool) -> list[tuple[str, nn.Module, int, int]]:
    prof = get_profile("default")
    torch.manual_seed(0)
    small = init_weights(zfnet(10, prof.input_size, prof.width, prof.fc_width), "kaiming").eval()
    out = [(f"default ZFNet ({prof.input_size}px, width {prof.width})", small, prof.input_size, 8)]
    if not quick:
        full = init_weights(zfnet(1000, 224), "kaiming").eval()
        out.append(("paper ZFNet (224px, full width)", full, 224, 14))
    return out


def run(quick: bool = False, *, rounds: int = 2, verbose: bool = True) -> list[dict]:
    """Seconds per occlusion map (square = a quarter of the side, stride as given) for each method."""
    from captum.attr import Occlusion

    rows = []
    for name, model, px, stride in _setups(quick):
        size = px // 4
        img = torch.randn(3, px, px)
        n_pos = len(occluder_positions(px, px, size, stride)[0]) ** 2
        prob_model = nn.Sequential(model, nn.Softmax(dim=1)).eval()
        occ = Occlusion(prob_model)

        def captum(ppe: int) -> float:
            t = time.perf_counter()
            with torch.no_grad():
                occ.attribute(img[None], sliding_window_shapes=(3, size, size), strides=(3, stride, stride),
                              baselines=0.0, target=1, perturbations_per_eval=ppe)
            return time.perf_counter() - t

        def ours(method: str) -> float:
            t = time.perf_counter()
            occlusion_maps(model, img, 1, size, stride, fill="mean", method=method)
            return time.perf_counter() - t

        # captum's best batching, chosen on a warm-up round
        trials = {ppe: captum(ppe) for ppe in (16, 64, n_pos)}
        best = min(trials, key=trials.get)
        ours("incremental"), ours("brute")
        c = i = b = 0.0
        for _ in range(rounds):
            c += captum(best)
            i += ours("incremental")
            b += ours("brute")
        inc = occlusion_maps(model, img, 1, size, stride, method="incremental")
        ref = occlusion_maps(model, img, 1, size, stride, method="brute")
        diff = float((inc.prob - ref.prob).abs().max())
        act = float(((inc.activation - ref.activation).abs().max() / ref.activation.abs().max().clamp_min(1e-12)))
        ratio = c / i
        rows.append({"what": f"{name}: {n_pos} positions, {size}px square, stride {stride}",
                     "captum_s": round(c / rounds, 3), "captum_ppe": best, "ours_s": round(i / rounds, 3),
                     "brute_s": round(b / rounds, 3), "ratio": round(ratio, 2), "max_prob_diff": diff,
                     "max_rel_act_diff": act, "goal": f">= {GOAL}",
                     "pass": ratio >= GOAL and diff < 1e-5 and (inc.top_class == ref.top_class).all().item()})
    if verbose:
        print(f"{'what':72s} {'captum s':>9s} {'ours s':>7s} {'brute s':>8s} {'ratio':>6s} {'|Δp| max':>9s} pass")
        for r in rows:
            print(f"{r['what']:72s} {r['captum_s']:9.3f} {r['ours_s']:7.3f} {r['brute_s']:8.3f} {r['ratio']:6.2f} "
                  f"{r['max_prob_diff']:9.1e} {r['pass']}")
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    run(a.quick, rounds=a.rounds)
