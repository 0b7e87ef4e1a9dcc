"""The recipe search behind the `default` profile (issue #3): which changes lift val top-1 at the CPU budget.

Each configuration trains the `default` network (ZFNet, conv widths x0.5, fc 1024, 128-px crops of 146-px
Imagenette, He init, one-cycle lr, renormalisation) from scratch for the same number of epochs as on the CPU,
and reports val top-1 every 4 epochs (centre crop) and at the end with the paper's 10 crops. The whole dataset
and the augmentation live on the GPU and the forward/backward runs in bf16 autocast, so one run takes about a
minute on an H200 and eight run side by side: the point is to *rank* recipes quickly, then confirm the chosen one
with a real CPU run (`zfrepro train --profile default`). Results of the run made for the `default` profile
(2026-11-28, one H200, the dataset re-encoded as 146-px WebP to travel): `benchmarks/recipe_sweep.jsonl`.

    ROOT=/path/to/imagenette python benchmarks/recipe_sweep.py OUT.jsonl DEADLINE_UNIX_S CFG [CFG ...]
    DEV=cpu QUICK=1 ...   # a 1-epoch check of the script itself on a 60th of the data

CFG indexes CONFIGS below (overrides of BASE, the `default` profile as it was before the search).
"""
import json, os, sys, time  # noqa: E401
import torch, torch.nn as nn, torch.nn.functional as F
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from zfrepro.data import decode_split, image_folder, pixel_mean, random_crop_flip, random_resized_crop_flip, ten_crop, center_crop
from zfrepro.models import zfnet, init_weights

# the `default` recipe before the search (conv1 lr x10, batch 128, random-resized crops, dropout 0.5)
BASE = dict(epochs=22, lr=0.02, mult=10.0, wd=5e-4, aug="rrc", scale=(0.25, 1.0), ls=0.1, fc=1024, crop=128,
            resize=146, bs=128, nesterov=False, width=0.5, renorm=True, warm=0.25, dropout=0.5, seed=0,
            eval_resize=None, eval_crop=None)
CONFIGS = [
    {}, {"seed": 1}, {"mult": 1.0}, {"bs": 64}, {"bs": 64, "lr": 0.01}, {"bs": 32, "lr": 0.01},
    {"bs": 32, "lr": 0.005}, {"lr": 0.04}, {"lr": 0.01}, {"wd": 1e-4}, {"wd": 1e-3}, {"scale": (0.35, 1.0)},
    {"scale": (0.08, 1.0)}, {"aug": "crop"}, {"ls": 0.0}, {"nesterov": True}, {"epochs": 30},
    {"crop": 112, "resize": 128, "epochs": 29}, {"crop": 112, "resize": 128, "epochs": 29, "eval_resize": 146},
    {"crop": 96, "resize": 110, "epochs": 38, "eval_resize": 128}, {"mult": 3.0},
    {"warm": 0.1}, {"width": 0.75, "epochs": 12}, {"fc": 2048}, {"dropout": 0.3}, {"bs": 64, "mult": 3.0},
    {"renorm": False}, {"bs": 64, "lr": 0.04}, {"bs": 64, "wd": 1e-3}, {"bs": 64, "lr": 0.02, "mult": 1.0},
    {"bs": 64, "scale": (0.35, 1.0)}, {"bs": 64, "dropout": 0.3},
]

C2 = [dict(bs=64, mult=3.0, aug="crop"), dict(bs=64, mult=1.0, aug="crop"), dict(bs=64, mult=3.0, dropout=0.3),
      dict(bs=64, mult=3.0, aug="crop", dropout=0.3), dict(bs=64, mult=3.0, scale=(0.35, 1.0), dropout=0.3),
      dict(bs=32, lr=0.01, mult=3.0), dict(bs=32, lr=0.01, mult=3.0, aug="crop"), dict(bs=64, mult=3.0, seed=1),
      dict(bs=64, mult=1.0, seed=1), dict(bs=64, mult=3.0, aug="crop", seed=1), dict(bs=64, mult=2.0, aug="crop"),
      dict(bs=64, mult=3.0, aug="crop", wd=1e-3), dict(bs=64, mult=3.0, aug="crop", ls=0.0),
      dict(bs=64, mult=3.0, aug="crop", epochs=20), dict(bs=64, mult=3.0, aug="crop", lr=0.03),
      dict(bs=64, mult=3.0, aug="crop", dropout=0.3, seed=1)]
CONFIGS += C2
dev = os.environ.get("DEV", "cuda")
QUICK = os.environ.get("QUICK") == "1"
def renorm_(model, radius=0.1):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                rms = m.weight.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
                m.weight.mul_(torch.where(rms > radius, radius / rms, torch.ones_like(rms)))


def rs(x, s):
    return F.interpolate(x.float(), size=s, mode="bilinear", antialias=True, align_corners=False)


def run(ci):
    c = dict(BASE, **CONFIGS[ci])
    if QUICK:
        c["epochs"] = 1
    torch.manual_seed(c["seed"])
    g = torch.Generator().manual_seed(c["seed"])
    Xtr, mean = (Xtr_full, mean_full) if c["resize"] == 146 else (rs(Xtr_full, c["resize"]), rs(mean_full[None], c["resize"])[0])
    er, ec = c["eval_resize"] or c["resize"], c["eval_crop"] or c["crop"]
    Xva, vmean = (Xva_full, mean_full) if er == 146 else (rs(Xva_full, er), rs(mean_full[None], er)[0])
    model = init_weights(zfnet(10, c["crop"], c["width"], c["fc"], dropout=c["dropout"]), "kaiming").to(dev)
    model = model.to(memory_format=torch.channels_last)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    ids = {id(p) for p in first.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) in ids], "lr": c["lr"] * c["mult"]},
              {"params": [p for p in model.parameters() if id(p) not in ids], "lr": c["lr"]}]
    opt = torch.optim.SGD(groups, lr=c["lr"], momentum=0.9, weight_decay=c["wd"], nesterov=c["nesterov"])
    steps = -(-len(Xtr) // c["bs"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[c["lr"] * c["mult"], c["lr"]],
                                                total_steps=steps * c["epochs"], pct_start=c["warm"])
    hist, t0 = [], time.time()
    for ep in range(c["epochs"]):
        model.train()
        perm = torch.randperm(len(Xtr), generator=g).to(dev)
        for s in range(steps):
            idx = perm[s * c["bs"]:(s + 1) * c["bs"]]
            x = (Xtr[idx].float() - mean) / 64.0
            x = random_resized_crop_flip(x, c["crop"], g, scale=c["scale"]) if c["aug"] == "rrc" else random_crop_flip(x, c["crop"], g)
            with torch.autocast(dev, torch.bfloat16, enabled=dev == 'cuda'):
                loss = F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), Ytr[idx], label_smoothing=c["ls"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step(); sched.step()
            if c["renorm"]:
                renorm_(model)
        if ep % 4 == 3 or ep == c["epochs"] - 1:
            hist.append((ep + 1, round(evaluate(model, Xva, Yva, vmean, ec, 1), 4)))
    conv1 = first.weight.detach().float()
    return dict(cfg=ci, overrides={k: v for k, v in CONFIGS[ci].items()}, val_center=hist,
                final_10crop=round(evaluate(model, Xva, Yva, vmean, ec, 10), 4), seconds=round(time.time() - t0),
                conv1_rms=round(conv1.pow(2).mean().sqrt().item(), 4), conv1_hf=hf(conv1))


def hf(w):
    try:
        from zfrepro.aliasing import high_frequency_share
        return round(float(high_frequency_share(w.cpu()).mean()), 4)
    except Exception as e:
        return str(e)[:80]


@torch.no_grad()
def evaluate(model, X, Y, mean, crop, crops):
    model.eval()
    correct = 0
    for s in range(0, len(X), 500):
        x = (X[s:s + 500].float() - mean) / 64.0
        with torch.autocast(dev, torch.bfloat16, enabled=dev == 'cuda'):
            if crops == 1:
                p = model(center_crop(x, crop).contiguous(memory_format=torch.channels_last)).float().softmax(1)
            else:
                n = len(x)
                p = model(ten_crop(x, crop).contiguous(memory_format=torch.channels_last)).float().softmax(1).view(10, n, -1).mean(0)
        correct += (p.argmax(1) == Y[s:s + 500]).sum().item()
    return correct / len(X)


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = True
    root = os.environ.get("ROOT", os.environ.get("ZFREPRO_DATA", "/root/imnette"))
    tr = decode_split(image_folder(root, "train"), 146, progress=False)
    va = decode_split(image_folder(root, "val"), 146, progress=False)
    mean_full = pixel_mean(tr).to(dev)
    Xtr_full = torch.as_tensor(tr.images).to(dev); Ytr = torch.as_tensor(tr.labels).to(dev)
    Xva_full = torch.as_tensor(va.images).to(dev); Yva = torch.as_tensor(va.labels).to(dev)
    if QUICK:
        Xtr_full, Ytr, Xva_full, Yva = Xtr_full[::60], Ytr[::60], Xva_full[::60], Yva[::60]
    out, deadline = sys.argv[1], float(sys.argv[2])
    for ci in map(int, sys.argv[3:]):
        if time.time() > deadline:
            print("deadline: skipped", ci, flush=True); continue
        r = run(ci)
        print(json.dumps(r), flush=True)
        with open(out, "a") as f:
            f.write(json.dumps(r) + "\n")
