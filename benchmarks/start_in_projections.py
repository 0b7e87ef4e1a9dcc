"""Is the conv2-5 speckle the random start left in their filters? (issue #14; no training needed)

The trained network's deconvnet projections (forward, switches and top-9 units unchanged) are computed
twice: with the trained filters in the backward pass, and with each conv layer's component along its own
random start removed from its *transposed* filters, W - (<W, W0>/|W0|^2) W0 (the start is reproducible:
``build_network`` after the profile's seed). Control: the same removal along an independent draw of the
same initialiser. Projection noise per layer: median over 6 maps x 9 top activations of the projection's
high-frequency share over its patch's (``zfrepro.structure.projection_noise``; ~1 = as smooth as its patch).

    ZFREPRO_DATA=... python benchmarks/start_in_projections.py [PROFILE]
"""
import contextlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from zfrepro.data import load_split  # noqa: E402
from zfrepro.deconv import DeconvNet  # noqa: E402
from zfrepro.top_units import choose_maps, median_projection_noise  # noqa: E402
from zfrepro.models import get_layer  # noqa: E402
from zfrepro.scan import top_activations  # noqa: E402
from zfrepro.config import resolve_profile  # noqa: E402
from zfrepro.train import build_network, load_trained  # noqa: E402

CONVS = ["conv1", "conv2", "conv3", "conv4", "conv5"]
OUT = Path(__file__).with_name("start_in_projections.jsonl")


def removed_along(w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``w`` without its component along ``d`` (whole layer)."""
    return w - (w * d).sum() / d.pow(2).sum() * d


@contextlib.contextmanager
def backward_weights(dn: DeconvNet, model: torch.nn.Module, weights: dict[str, torch.Tensor]):
    """Within the block, the deconvnet's backward pass filters with ``weights`` (forward unchanged)."""
    orig = DeconvNet._backward_cropped

    def patched(self, *a, **k):
        saved = {n: get_layer(model, n).weight.detach().clone() for n in weights}
        try:
            with torch.no_grad():
                for n, w in weights.items():
                    get_layer(model, n).weight.copy_(w)
            return orig(self, *a, **k)
        finally:
            with torch.no_grad():
                for n, w in saved.items():
                    get_layer(model, n).weight.copy_(w)

    DeconvNet._backward_cropped = patched
    try:
        yield
    finally:
        DeconvNet._backward_cropped = orig


def main() -> None:
    profile = sys.argv[1] if len(sys.argv) > 1 else "default"
    prof, arch = resolve_profile(profile)
    model = load_trained(prof, arch).eval()
    torch.manual_seed(prof.seed)
    start = build_network(prof, arch, model.spec["num_classes"])
    torch.manual_seed(prof.seed + 12345)
    other = build_network(prof, arch, model.spec["num_classes"])
    val = load_split(prof, "val", progress=False)
    dn = DeconvNet(model)
    tops = top_activations(model, val, layers=dn.layers, k=9, progress=False)
    maps = {layer: choose_maps(tops[layer], 6, seed=0) for layer in dn.layers}
    cases = {
        "trained filters": {},
        "random start removed (conv2-5)": {n: removed_along(get_layer(model, n).weight.detach(),
                                                            get_layer(start, n).weight.detach()) for n in CONVS[1:]},
        "control: another draw removed (conv2-5)": {n: removed_along(get_layer(model, n).weight.detach(),
                                                                     get_layer(other, n).weight.detach()) for n in CONVS[1:]},
    }
    for case, weights in cases.items():
        with backward_weights(dn, model, weights):
            noise = median_projection_noise(model, val, k=9, deconv=dn, tops=tops, maps=maps)
        share = {n: round(float(((get_layer(model, n).weight.detach() * get_layer(start, n).weight.detach()).sum()
                                 / get_layer(start, n).weight.detach().norm()) ** 2
                                / get_layer(model, n).weight.detach().pow(2).sum()), 3) for n in CONVS}
        row = {"profile": profile, "case": case, "projection_noise": noise, "start_energy_share": share}
        print(json.dumps(row), flush=True)
        with open(OUT, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
