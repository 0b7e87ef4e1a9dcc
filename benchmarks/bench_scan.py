"""Dataset scan (Fig. 2's top-9 search over every conv layer) vs. a plain no-grad forward pass
through the same convolutional stack.

Both run over the same model-ready validation images, in the same batches, side by side in one run
(alternating blocks so that other load on a shared machine hits both alike). The scan does one forward
per batch for all five layers and keeps a running top-k per feature map. Goal: the scan costs at most
15 % over inference (ratio scan / forward ≤ 1.15), both in the scan's memory layout
(:func:`zfrepro.devices.inference_layout`: channels-last on the CPU). A second row times the scan
against the same scan with NCHW batches (the layout before issue #18), alternating likewise: goal
channels-last ≥ 1.1× faster on the CPU.

    python benchmarks/bench_scan.py [--quick] [--profile default] [--images N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zfrepro import scan as zscan  # noqa: E402
from zfrepro.config import get_profile  # noqa: E402
from zfrepro.devices import inference_layout  # noqa: E402
from zfrepro.data import load_split  # noqa: E402
from zfrepro.models import init_weights, zfnet  # noqa: E402
from zfrepro.scan import top_activations  # noqa: E402

GOAL = 1.15
LAYOUT_GOAL = 1.1


def run(quick: bool = False, *, profile: str = "default", images: int | None = None, batch_size: int = 64,
        rounds: int = 2, data_root: str | None = None, verbose: bool = True) -> list[dict]:
    """Seconds for the scan (k=9, conv1-conv5) and for a plain forward over the same images."""
    prof = get_profile(profile)
    val = load_split(prof, "val", data_root, progress=False)
    n = images or (256 if quick else 1024)
    data = Subset(val, range(min(n, len(val))))
    torch.manual_seed(0)
    model = init_weights(zfnet(len(val.classes), prof.input_size, prof.width, prof.fc_width), "kaiming").eval()
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    batches = [x for x, _ in loader]  # decode/normalise once: both sides get identical tensors

    def forward() -> float:
        # inference through the convolutional stack (the scan needs nothing past conv5 and stops there,
        # so comparing with the whole network, fc layers included, would flatter it)
        t = time.perf_counter()
        with torch.no_grad():
            for x in batches:
                model.features(inference_layout(x))
        return time.perf_counter() - t

    def scan(layout=inference_layout) -> float:
        zscan.inference_layout = layout  # the NCHW side: batches as they come
        try:
            t = time.perf_counter()
            top_activations(model, [(x, None) for x in batches], layers=[f"conv{i}" for i in range(1, 6)], k=9,
                            progress=False)
            return time.perf_counter() - t
        finally:
            zscan.inference_layout = inference_layout

    def nchw(x: torch.Tensor) -> torch.Tensor:
        return x

    forward(), scan(), scan(nchw)  # warm up
    f = s = s_nchw = 0.0
    for _ in range(rounds):
        f += forward()
        s += scan()
        s_nchw += scan(nchw)
    ratio = s / f
    what = f"scan conv1-5, k=9, {len(data)} images at {prof.input_size}px"
    row = {"what": what, "scan_s": round(s / rounds, 3),
           "forward_s": round(f / rounds, 3), "ratio": round(ratio, 3), "goal": f"<= {GOAL}", "pass": ratio <= GOAL}
    layout = {"what": what, "compared": "scan s: NCHW batches vs channels-last (zfrepro.devices.inference_layout)",
              "scan_s": round(s_nchw / rounds, 3),
              "forward_s": round(s / rounds, 3), "ratio": round(s_nchw / s, 3), "goal": f">= {LAYOUT_GOAL}",
              "pass": s_nchw / s >= LAYOUT_GOAL}
    if verbose:
        print(f"{'what':45s} {'scan s':>8s} {'forward s':>10s} {'ratio':>6s} {'goal':>7s} pass")
        print(f"{row['what']:45s} {row['scan_s']:8.3f} {row['forward_s']:10.3f} {row['ratio']:6.3f} "
              f"{row['goal']:>7s} {row['pass']}")
        print(f"{layout['what']:45s} {layout['scan_s']:8.3f} {layout['forward_s']:10.3f} {layout['ratio']:6.3f} "
              f"{layout['goal']:>7s} {layout['pass']}")
    return [row, layout]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--data-root", default=None)
    a = ap.parse_args()
    run(a.quick, profile=a.profile, images=a.images, data_root=a.data_root)
