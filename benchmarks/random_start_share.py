"""How much of each layer's trained weights is still its random start (notebook 03's speckle question).

The init is reproducible: ``train()`` seeds torch with the profile's seed and builds the network first, so
``build_network`` after the same ``torch.manual_seed`` gives the exact starting weights. Per conv layer we report the
share of the final weights' energy along their own starting weights, (⟨W, W₀⟩ / ‖W₀‖)² / ‖W‖² (1 = unchanged up to
scale, 0 = nothing of the start left), over whole layers.

    ZFREPRO_DATA=... python benchmarks/random_start_share.py [PROFILE] [key=value ...]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from zfrepro.models import get_layer  # noqa: E402
from zfrepro.config import resolve_profile  # noqa: E402
from zfrepro.train import build_network, load_trained  # noqa: E402

profile = sys.argv[1] if len(sys.argv) > 1 else "default"
sets = dict(a.split("=", 1) for a in sys.argv[2:])
prof, arch = resolve_profile(profile, **sets)
final = load_trained(prof, arch)
torch.manual_seed(prof.seed)
start = build_network(prof, arch, final.spec["num_classes"])
for name in ["conv1", "conv2", "conv3", "conv4", "conv5"]:
    w, w0 = get_layer(final, name).weight.detach().double(), get_layer(start, name).weight.detach().double()
    along = float((w * w0).sum() / w0.norm()) ** 2
    print(f"{name}: share of the trained weights' energy along the random start {along / float(w.pow(2).sum()):.3f} "
          f"(start RMS {float(w0.pow(2).mean().sqrt()):.4f}, trained RMS {float(w.pow(2).mean().sqrt()):.4f})")
