"""Is the conv3-5 speckle many layer-1 channels painted incoherently? (issue #14; no training needed)

Hypothesis: a deconvnet projection is a sum of conv1 filters painted where the layer-1 reconstruction is non-zero
(pool1's switches). Between pool2 and the unit nothing gates the rectified signal in space, so when the transposed
conv3-5 filters spread it over many layer-1 channels, the copies add up to broadband speckle. Per top-9 unit of 6
maps per layer (the committed network, as notebook 03): the participation ratio of the layer-1 reconstruction's
channel energies (how many of conv1's channels paint it; 1 = one channel), its projection noise
(``zfrepro.structure.projection_noise``), and the rank correlation of the two over the units of all layers. Then the
intervention: the same reconstruction with only its ``keep`` strongest layer-1 channels, filtered by conv1's
transpose, and the high-frequency share of that projection against the one with every channel (whole images).
Refuted if the participation ratio does not rise with depth, does not track the noise, or keeping the strongest
channels does not lower the high-frequency share.

    ZFREPRO_DATA=... python benchmarks/speckle_coherence.py [PROFILE]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.jsonl_rows import append_row  # noqa: E402
from zfrepro.aliasing import high_frequency_share  # noqa: E402
from zfrepro.config import resolve_profile  # noqa: E402
from zfrepro.data import load_split  # noqa: E402
from zfrepro.deconv import DeconvNet  # noqa: E402
from zfrepro.models import get_layer  # noqa: E402
from zfrepro.scan import top_activations  # noqa: E402
from zfrepro.structure import projection_noise  # noqa: E402
from zfrepro.top_units import choose_maps, project_top_units  # noqa: E402
from zfrepro.train import load_trained  # noqa: E402

OUT = Path(__file__).with_name("speckle_coherence.jsonl")
KEEP = (1, 3, 8)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation of the pairs where both are finite."""
    ok = torch.isfinite(a) & torch.isfinite(b)
    a, b = a[ok], b[ok]
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def paint(rec: torch.Tensor, conv1: torch.nn.Conv2d, size: torch.Size) -> torch.Tensor:
    """conv1's transpose of layer-1 reconstructions (N×C×H×W) to pixels of ``size``: the deconvnet's last step."""
    base = torch.nn.functional.conv_transpose2d(rec, conv1.weight, None, conv1.stride, conv1.padding)
    extra = tuple(int(t) - int(b) for t, b in zip(size, base.shape[-2:]))
    if extra == (0, 0):
        return base
    return torch.nn.functional.conv_transpose2d(rec, conv1.weight, None, conv1.stride, conv1.padding, extra)


def main() -> None:
    profile = sys.argv[1] if len(sys.argv) > 1 else "default"
    prof, arch = resolve_profile(profile)
    model = load_trained(prof, arch).eval()
    val = load_split(prof, "val", progress=False)
    dn = DeconvNet(model)
    tracer = DeconvNet(model, check=False)  # the same deconvnet, without re-checking it against captum per unit
    conv1 = get_layer(model, "conv1")
    tops = top_activations(model, val, layers=dn.layers, k=9, progress=False)
    row = {"profile": profile, "layers": {}}
    all_pr, all_noise = [], []
    for layer in dn.layers:
        maps = choose_maps(tops[layer], 6, seed=0)
        units = project_top_units(model, val, tops[layer], maps, deconv=dn)
        noise = projection_noise(units.projections, units.patches).flatten()
        pr, hf = [], {k: [] for k in ("all", *KEEP)}
        t = tops[layer]
        index = t.image_index[maps].flatten()  # the same units, in the same order, as ``units``
        steps = tracer.trace(val.batch([int(i) for i in index]), layer, [m for m in maps for _ in range(t.values.shape[1])],
                             t.position[maps].flatten(0, 1))  # one forward and one backward pass for the layer
        recs, pixels = steps[-2][1], steps[-1][1]  # the rectified layer-1 reconstructions; the projections
        assert torch.allclose(paint(recs, conv1, pixels.shape[-2:]), pixels, atol=1e-5 * float(pixels.abs().max()))
        for rec in recs:
            energy = rec.pow(2).flatten(1).sum(1)
            pr.append(float(energy.sum() ** 2 / energy.pow(2).sum()))
            order = energy.argsort(descending=True)
            for k in ("all", *KEEP):
                kept = rec if k == "all" else torch.zeros_like(rec).index_copy_(0, order[:k], rec[order[:k]])
                hf[k].append(float(high_frequency_share(paint(kept[None], conv1, pixels.shape[-2:]))[0]))
        pr_t = torch.tensor(pr)
        all_pr.append(pr_t)
        all_noise.append(noise)
        row["layers"][layer] = {"participation_ratio_median": round(float(pr_t.median()), 2),
                                "projection_noise_median": round(float(noise.nanmedian()), 2),
                                "spearman_pr_vs_noise": round(spearman(pr_t, noise), 3) if layer != "conv1" else None,
                                "hf_share_median": {str(k): round(float(torch.tensor(v).median()), 3) for k, v in hf.items()}}
        print(layer, row["layers"][layer], flush=True)
    row["spearman_pr_vs_noise_all_layers"] = round(spearman(torch.cat(all_pr), torch.cat(all_noise)), 3)
    append_row(OUT, row)


if __name__ == "__main__":
    main()
