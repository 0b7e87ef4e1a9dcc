"""Is the conv2-5 speckle the deconvnet's rule, or the network? (issue #14; no training needed)

The deconvnet rectifies the backward signal but does not gate it by the forward pass, so it can paint layer-1
channels at switches where they hardly fired. Guided backpropagation (Springenberg et al. 2014) adds the forward
gate at every ReLU; the plain gradient has only the gate. Projection noise (``zfrepro.structure.projection_noise``)
and the projections' high-frequency share under the three rules (``zfrepro.backprop.project_by_rule``), on the same
top-9 units of 6 maps per layer as notebook 03. Refuted as "the network, not the rule" if guided backpropagation's
projections are about as smooth as their patches (noise near 1) where the deconvnet's are not.

    ZFREPRO_DATA=... python benchmarks/speckle_rules.py [PROFILE]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.jsonl_rows import append_row  # noqa: E402
from zfrepro.aliasing import high_frequency_share  # noqa: E402
from zfrepro.backprop import RULES, project_by_rule  # noqa: E402
from zfrepro.config import resolve_profile  # noqa: E402
from zfrepro.data import load_split  # noqa: E402
from zfrepro.deconv import DeconvNet  # noqa: E402
from zfrepro.scan import top_activations  # noqa: E402
from zfrepro.structure import projection_noise  # noqa: E402
from zfrepro.top_units import choose_maps, project_top_units  # noqa: E402
from zfrepro.train import load_trained  # noqa: E402

OUT = Path(__file__).with_name("speckle_rules.jsonl")


class ByRule:
    """``project(x, layer, channels, positions)`` of :func:`zfrepro.backprop.project_by_rule` under one rule: what
    :func:`zfrepro.top_units.project_top_units` calls on a deconvnet."""

    def __init__(self, model: torch.nn.Module, rule: str) -> None:
        self.model, self.rule = model, rule

    def project(self, x: torch.Tensor, layer: str, channels, positions) -> torch.Tensor:
        return project_by_rule(self.model, x, layer, channels, positions, rule=self.rule)


def main() -> None:
    profile = sys.argv[1] if len(sys.argv) > 1 else "default"
    prof, arch = resolve_profile(profile)
    model = load_trained(prof, arch).eval()
    val = load_split(prof, "val", progress=False)
    layers = DeconvNet(model).layers
    tops = top_activations(model, val, layers=layers, k=9, progress=False)
    row = {"profile": profile, "layers": {}}
    for layer in layers:
        maps = choose_maps(tops[layer], 6, seed=0)
        row["layers"][layer] = {}
        for rule in RULES:
            units = project_top_units(model, val, tops[layer], maps, deconv=ByRule(model, rule))
            row["layers"][layer][rule] = {
                "projection_noise": round(float(projection_noise(units.projections, units.patches).nanmedian()), 2),
                "projection_hf_share": round(float(high_frequency_share(units.projections.flatten(0, 1)).nanmedian()), 3)}
        print(layer, row["layers"][layer], flush=True)
    append_row(OUT, row)


if __name__ == "__main__":
    main()
