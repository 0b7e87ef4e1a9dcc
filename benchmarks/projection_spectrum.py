"""Is the colour speckle of the default network's conv2-5 projections a 2-pixel grid from the stride-2 transposed
convolutions? Spectrum of 32 whole-image projections per layer (8 maps x top 4 of every 4th val image) against their
images: the energy share near the grid frequencies vs the share of the frequency plane they cover (notebook 03).

    ZFREPRO_DATA=... python benchmarks/projection_spectrum.py
"""
import torch
from torch.utils.data import Subset
from zfrepro.train import load_trained
from zfrepro.data import load_split
from zfrepro.deconv import DeconvNet
from zfrepro.scan import top_activations
from zfrepro.top_units import choose_maps, project_top_units
torch.set_num_threads(1)
m = load_trained("default")
val = load_split("default", "val", progress=False)
sub = Subset(val, list(range(0, len(val), 4)))
dn = DeconvNet(m)
tops = top_activations(m, sub, layers=["conv2", "conv5"], k=4, progress=False)
for layer in ["conv2", "conv5"]:
    # project on full images, not crops: spectrum of the whole projection
    maps = choose_maps(tops[layer], 8, seed=0)
    P, I = [], []
    for mp in maps:
        for r in range(4):
            idx = int(tops[layer].image_index[mp, r]); x = val.batch([sub.indices[idx]])
            P.append(dn.project(x, layer, [mp], tops[layer].position[mp, r][None])[0]); I.append(x[0])
    for name, T in (("projection", torch.stack(P)), ("image", torch.stack(I))):
        T = T - T.mean((2, 3), keepdim=True)
        S = torch.fft.fft2(T.double()).abs().pow(2).sum(1).mean(0)
        S = S / S.sum()
        n = S.shape[-1]; f = torch.fft.fftfreq(n).abs()
        fy, fx = f[:, None].expand(n, n), f[None, :].expand(n, n)
        near = lambda a, b: ((fy - a).abs() < 0.04) & ((fx - b).abs() < 0.04)
        band = {"(0.5,0.5)": near(0.5, 0.5), "(0,0.5)|(0.5,0)": near(0, 0.5) | near(0.5, 0),
                "(0.25,*)|(*,0.25)": ((fy - 0.25).abs() < 0.02) | ((fx - 0.25).abs() < 0.02)}
        area = {k: float(v.double().mean()) for k, v in band.items()}
        hi = (torch.sqrt(fy**2 + fx**2) > 0.2)
        print(layer, name, "share >0.2 cyc/px %.3f" % float(S[hi].sum()), {k: "%.3f (area %.3f)" % (float(S[v].sum()), area[k]) for k, v in band.items()})
