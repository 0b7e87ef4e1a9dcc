"""What sets the conv2-5 projections' high frequencies? (issue #14; no training needed)

Three measurements per layer on the top-9 units of 6 maps (the committed network, as notebook 03):

1. *Numerator or denominator?* The projection noise (``zfrepro.structure.projection_noise``) is the projection's
   high-frequency share over its patch's. Both shares are given apart, to see which one moves with depth.
2. *Incoherent stamping.* A projection is conv1's transpose applied to the rectified layer-1 reconstruction, which
   is non-zero only at pool1's switches. If the reconstruction were spatially white (its spikes placed without
   regard to each other), the projection's spectrum would be each conv1 filter's power spectrum weighted by its
   channel's energy in the reconstruction. The ratio of the actual HF share to that prediction says how much the
   arrangement of the spikes cancels (< 1) beyond what the filters carry.
3. *What the filters carry.* The same reconstructions painted with conv1's filters replaced by their rank-1 colour
   patterns (``zfrepro.structure.dominant_pattern``) and by the Gabor/blob fit of that pattern (``fit_gabor``), on
   whole images: how much of the HF share is conv1's non-Gabor residue.

Refuted as "the speckle is conv1's filters, stamped" if the projections' HF share rises with depth like the noise,
if the actual/incoherent ratio is far below 1, or if the Gabor-fit painting leaves the HF share where it is.

    ZFREPRO_DATA=... python benchmarks/speckle_spectrum.py [PROFILE] [FIELD=VALUE ...]

(``FIELD=VALUE``: a profile override of the measured run, e.g. ``first_decay_mult=20``; that run must be trained.)
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
from zfrepro.structure import dominant_pattern, fit_gabor, projection_noise  # noqa: E402
from zfrepro.top_units import choose_maps, project_top_units  # noqa: E402
from zfrepro.train import load_trained  # noqa: E402

OUT = Path(__file__).with_name("speckle_spectrum.jsonl")
CUTOFF = 0.4  # × Nyquist, as high_frequency_share and projection_noise


def incoherent_hf_share(energy: torch.Tensor, weight: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """HF share of the spectrum Σ_c energy[n, c] · |FFT(filter_c)|² (the filters as they are, zero-padded to
    ``size``, colour channels summed, the zero-frequency bin left out as the projection's mean is): what conv1's
    transpose of a spatially white reconstruction with these channel energies would give."""
    h, w = size
    k = weight.shape[-1]
    padded = torch.zeros(weight.shape[0], weight.shape[1], h, w, dtype=torch.float64)
    padded[..., :k, :k] = weight.detach().double()
    power = torch.fft.fft2(padded).abs().pow(2).sum(1)  # C×h×w
    power[:, 0, 0] = 0.0
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None] / 0.5
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :] / 0.5
    high = ((fy ** 2 + fx ** 2).sqrt() > CUTOFF)
    spec = torch.einsum("nc,chw->nhw", energy.double(), power)
    return (spec * high).flatten(1).sum(1) / spec.flatten(1).sum(1)


def main() -> None:
    profile = sys.argv[1] if len(sys.argv) > 1 else "default"
    overrides = {k: float(v) for k, v in (a.split("=", 1) for a in sys.argv[2:])}
    prof, arch = resolve_profile(profile, **overrides)
    model = load_trained(prof, arch).eval()
    val = load_split(prof, "val", progress=False)
    dn = DeconvNet(model)
    tracer = DeconvNet(model, check=False)
    conv1 = get_layer(model, "conv1")
    w = conv1.weight.detach()
    pattern, colour = dominant_pattern(w)
    _, fitted = fit_gabor(pattern)
    variants = {"rank-1": torch.einsum("nc,nhw->nchw", colour, pattern).float(),
                "Gabor fit": torch.einsum("nc,nhw->nchw", colour.float(), fitted.float())}
    row = {"profile": profile, "overrides": overrides, "conv1_filters_hf_share": {
        "actual": round(float(high_frequency_share(w).median()), 3),
        **{k: round(float(high_frequency_share(v).median()), 3) for k, v in variants.items()}}, "layers": {}}
    print(row["conv1_filters_hf_share"], flush=True)
    tops = top_activations(model, val, layers=dn.layers, k=9, progress=False)
    for layer in dn.layers:
        t = tops[layer]
        maps = choose_maps(t, 6, seed=0)
        units = project_top_units(model, val, t, maps, deconv=dn)
        proj, patches = units.projections.flatten(0, 1), units.patches.flatten(0, 1)
        entry = {"receptive_field": int(proj.shape[-1]),
                 "projection_noise": round(float(projection_noise(units.projections, units.patches).nanmedian()), 2),
                 "projection_hf_share": round(float(high_frequency_share(proj).nanmedian()), 3),
                 "patch_hf_share": round(float(high_frequency_share(patches).nanmedian()), 3)}
        if layer != "conv1":
            steps = tracer.trace(val.batch([int(i) for i in t.image_index[maps].flatten()]), layer,
                                 [m for m in maps for _ in range(t.values.shape[1])], t.position[maps].flatten(0, 1))
            recs, pixels = steps[-2][1], steps[-1][1]  # rectified layer-1 reconstructions; whole-image projections
            size = tuple(pixels.shape[-2:])
            actual = high_frequency_share(pixels)
            predicted = incoherent_hf_share(recs.pow(2).flatten(2).sum(2), w, size)
            entry["whole_image_hf_share"] = round(float(actual.median()), 3)
            entry["incoherent_prediction_hf_share"] = round(float(predicted.median()), 3)
            entry["actual_over_incoherent"] = round(float((actual / predicted).median()), 2)
            entry["layer1_reconstruction_hf_share"] = round(float(high_frequency_share(recs).median()), 3)
            entry["layer1_reconstruction_nonzero"] = round(float((recs != 0).double().mean()), 4)
            for name, v in variants.items():
                painted = high_frequency_share(paint_with(recs, v, conv1, size))
                entry[f"painted_{name}_hf_share"] = round(float(painted.median()), 3)
        row["layers"][layer] = entry
        print(layer, entry, flush=True)
    append_row(OUT, row)


def paint_with(recs: torch.Tensor, weight: torch.Tensor, conv1: torch.nn.Conv2d, size: tuple[int, int]) -> torch.Tensor:
    """conv1's transpose of layer-1 reconstructions with other filters ``weight``, at the pixel ``size`` (a strided
    conv's transpose needs the output_padding that restores it)."""
    base = torch.nn.functional.conv_transpose2d(recs[:1], weight, None, conv1.stride, conv1.padding).shape[-2:]
    extra = tuple(int(s) - int(b) for s, b in zip(size, base))
    return torch.nn.functional.conv_transpose2d(recs, weight, None, conv1.stride, conv1.padding, extra)


if __name__ == "__main__":
    main()
