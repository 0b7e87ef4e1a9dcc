"""Named, typed profiles: ``smoke`` (CI), ``default`` (CPU, real results), ``paper`` (GPU, §3).

Every notebook and CLI command takes a profile name plus single-field overrides::

    from zfrepro.config import get_profile
    p = get_profile("default", epochs=10)

An unknown profile or field is a :class:`~zfrepro.errors.ConfigError` listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, get_type_hints

from .errors import ConfigError

__all__ = ["Profile", "PROFILES", "get_profile", "profile_names", "PAPER_EPOCHS", "SCHEDULES", "AUGMENTS",
           "resolve_profile", "split_profile", "profile_spec", "profile_of"]

SCHEDULES = ("plateau", "onecycle", "cosine", "constant")
AUGMENTS = ("crop-flip", "rrc-flip")

#: The epochs at which Fig. 4 shows the features.
PAPER_EPOCHS: tuple[int, ...] = (1, 2, 5, 10, 20, 30, 40, 64)


@dataclass(frozen=True)
class Profile:
    """One complete configuration of data, model and training.

    Deviations of a profile from the paper are listed in ``deviations`` so that the
    notebooks can print them.
    """

    name: str
    # --- data
    resize: int = 256            # shorter side resized to this, then centre-cropped square (paper: 256)
    input_size: int = 224        # crop fed to the network (paper: 224)
    train_per_class: int = 0     # images per class from the train split (0: all)
    val_per_class: int = 0       # images per class from the val split (0: all)
    pixel_scale: float = 1.0     # (pixels in 0..255 - per-pixel mean) / pixel_scale; paper: 1 (raw range)
    augment: str = "crop-flip"   # "crop-flip" (paper: random crops + flips) or "rrc-flip" (random-resized crops)
    # --- model
    arch: str = "zfnet"
    width: float = 1.0           # multiplier of conv channels (96/256/384/384/256)
    fc_width: int = 4096         # fc6/fc7 units
    conv_maps: tuple[int, ...] = ()      # Table 3: conv1-5 maps at width 1, e.g. 96,256,512,1024,512 (): the arch's own
    remove_layers: tuple[int, ...] = ()  # Table 3: layers removed, any of 3, 4, 6, 7 (): none
    init: str = "paper"          # "paper" N(0, 1e-2), "kaiming", "torch"
    dropout: float = 0.5
    # --- optimisation
    epochs: int = 70
    batch_size: int = 128
    lr: float = 1e-2
    first_lr_mult: float = 1.0  # learning-rate multiplier of the first convolution (1: as the paper)
    first_decay_mult: float = 1.0  # weight-decay multiplier of the first convolution's weights (Caffe's decay_mult)
    conv_init_mult: float = 1.0   # multiplier of conv2-5's starting weights, after ``init`` (1: as initialised)
    conv_lr_mult: float = 1.0     # learning-rate multiplier of conv2-5 (weights and biases)
    conv_decay_mult: float = 1.0  # weight-decay multiplier of conv2-5's weights
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "plateau"    # "plateau" (anneal ×0.1 on val plateaus), "onecycle", "cosine", "constant"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    renorm: bool = True          # renormalise conv filters with RMS > renorm_radius (§3)
    renorm_radius: float = 0.1
    snapshot_epochs: tuple[int, ...] = PAPER_EPOCHS
    eval_crops: int = 1          # 1: centre crop; 10: corners + centre with flips (paper)
    seed: int = 0
    num_workers: int = 0
    deviations: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (lists for tuples), for JSON files and checkpoints."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", resize=72, input_size=64, train_per_class=24, val_per_class=8,
        pixel_scale=64.0, width=0.25, fc_width=128, init="kaiming", epochs=2, batch_size=32,
        lr=0.02, schedule="onecycle", snapshot_epochs=(1, 2), eval_crops=1,
        deviations=("64-px crops of 72-px images", "240 train / 80 val images",
                    "conv widths ×0.25, fc 128", "He init, one-cycle lr", "2 epochs"),
    ),
    "default": Profile(
        name="default", resize=146, input_size=128, pixel_scale=64.0, width=0.5, fc_width=1024,
        init="hybrid", dropout=0.3, epochs=44, batch_size=64, lr=0.02, first_lr_mult=3.0, weight_decay=5e-4,
        schedule="onecycle", augment="crop-flip", label_smoothing=0.1, snapshot_epochs=(1, 2, 5, 10, 20, 30, 40),
        eval_crops=10,
        deviations=("Imagenette (10 classes, 9,469 train images) instead of ImageNet",
                    "128-px crops of 146-px images instead of 224 of 256",
                    "conv widths x0.5 (48-128-192-192-128 maps) and fc6/fc7 1024 units instead of 96-256-384-384-256 "
                    "and 4096: full width trains at ~29 images/s on 2 CPU cores, half width at ~75-80",
                    "He-normal init of conv2-5 and fc6/fc7 instead of N(0, 1e-2); conv1 and fc8 keep the paper's "
                    "N(0, 1e-2). conv1 from He (std 0.117, above the renormalisation radius 0.1) keeps its random "
                    "start: after a 4-epoch proxy 19 % of its filters are Gabors or blobs (structure R² >= 0.6, median "
                    "0.40) against 100 % (median 0.90) from N(0, 1e-2), start : radius 1 : 10 as in the paper "
                    "(benchmarks/conv1_recipes.jsonl)",
                    "batch 64 instead of 128: twice the updates (148 per epoch) and faster on 2 CPU cores "
                    "(82 vs 67 images/s)",
                    "conv1 learns 3x faster than the other layers (lr_mult 3): with 1x its filters stay close to "
                    "their random start (FFT high-frequency share 0.84, 0.89 at init), with 3x 0.74",
                    "one-cycle lr (peak 0.02) instead of manual annealing on plateaus",
                    "dropout 0.3 instead of 0.5; weight decay 5e-4 and label smoothing 0.1 (not in the paper)",
                    "inputs (pixels - mean)/64 instead of raw pixel range",
                    "44 epochs instead of 70 (22 gave 79.9 % val top-1 with 10 crops, 44 give 83.2 % and conv3 projections 44 % less "
                    "noisy; the complete run 66 min on 2 CPU cores)"),
    ),
    "paper": Profile(name="paper", deviations=()),
}


def profile_names() -> list[str]:
    """The names of the built-in profiles."""
    return list(PROFILES)


def _coerce(name: str, value: Any, typ: Any) -> Any:
    """Coerce an override (possibly a string from the CLI) to the field's type."""
    origin = getattr(typ, "__origin__", None)
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if typ in (int, float, str):
            if typ is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return typ(value)
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            inner = typ.__args__[0]
            return tuple(inner(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"profile field {name!r} needs a {getattr(typ, '__name__', typ)}, got {value!r}") from None
    return value


def get_profile(name: str | Profile = "default", /, **overrides: Any) -> Profile:
    """The profile ``name`` with single fields overridden, e.g. ``get_profile("smoke", epochs=1)`` or, in
    one string (a notebook's ``profile`` parameter, ``zfrepro reproduce --profile``),
    ``get_profile("smoke:epochs=1")`` (:func:`split_profile`).

    Overrides given as strings (from ``--set key=value``) are converted to the field's type; every field
    is validated (an unknown profile, field or value is a one-line :class:`ConfigError`).
    """
    if isinstance(name, Profile):
        base = name
    else:
        name, spec_overrides = split_profile(name)
        overrides = {**spec_overrides, **overrides}
        if name not in PROFILES:
            raise ConfigError(f"unknown profile {name!r}: use one of {', '.join(PROFILES)}")
        base = PROFILES[name]
    hints = get_type_hints(Profile)
    valid = [f.name for f in fields(Profile) if f.name not in ("name", "deviations")]
    clean: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in valid:
            raise ConfigError(f"unknown profile field {key!r}: valid fields are {', '.join(valid)}")
        clean[key] = _coerce(key, value, hints[key])
    prof = replace(base, **clean)
    small = [f"{k}={getattr(prof, k)}" for k in ("resize", "input_size", "epochs", "batch_size", "fc_width")
             if getattr(prof, k) < 1] + ([f"width={prof.width}"] if prof.width <= 0 else [])
    if small:
        raise ConfigError(f"{', '.join(small)}: sizes, counts and widths must be positive")
    if prof.input_size > prof.resize:
        raise ConfigError(f"input_size {prof.input_size} exceeds resize {prof.resize}: crops come from the resized image")
    if prof.eval_crops not in (1, 10):
        raise ConfigError(f"eval_crops must be 1 or 10, got {prof.eval_crops}")
    _check_recipe(prof)
    return prof


def _check_recipe(prof: Profile) -> None:
    """The fields only training reads: one line naming a bad value and the valid ones."""
    from .models import INIT_SCHEMES

    if prof.schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {prof.schedule!r}: use one of {', '.join(SCHEDULES)}")
    if prof.augment not in AUGMENTS:
        raise ConfigError(f"unknown augment {prof.augment!r}: use one of {', '.join(AUGMENTS)}")
    if prof.init not in INIT_SCHEMES:
        raise ConfigError(f"unknown init {prof.init!r}: use one of {', '.join(INIT_SCHEMES)}")
    if prof.epochs < 1 or prof.batch_size < 1:
        raise ConfigError(f"epochs and batch_size must be positive, got {prof.epochs} and {prof.batch_size}")
    if not 0.0 <= prof.dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {prof.dropout}")
    if prof.lr <= 0 or prof.renorm_radius <= 0 or prof.warmup_epochs < 0:
        raise ConfigError("lr and renorm_radius must be positive and warmup_epochs >= 0")
    mults = {k: getattr(prof, k) for k in ("first_lr_mult", "conv_lr_mult", "conv_init_mult")}
    bad = [f"{k}={v}" for k, v in mults.items() if not v > 0] + \
        [f"{k}={getattr(prof, k)}" for k in ("first_decay_mult", "conv_decay_mult") if not getattr(prof, k) >= 0]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: learning-rate and init multipliers must be positive, decay multipliers >= 0")


def split_profile(profile: str) -> tuple[str, dict[str, str]]:
    """``"smoke:epochs=3,snapshot_epochs=1,2"`` → ``("smoke", {"epochs": "3", "snapshot_epochs": "1,2"})``;
    a plain name → ``(name, {})``. Items are separated by commas before a ``key=`` (so a tuple value may
    hold commas) or by semicolons; a malformed item is a :class:`ConfigError`."""
    if not isinstance(profile, str) or ":" not in profile:
        return profile, {}
    name, _, rest = profile.partition(":")
    out: dict[str, str] = {}
    for item in re.split(r";|,(?=\s*[A-Za-z_]\w*\s*=)", rest):
        if not item.strip():
            continue
        if "=" not in item:
            raise ConfigError(f"profile {profile!r}: {item.strip()!r} is not field=value; write e.g. "
                              f"{name}:epochs=3,lr=0.01")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return name.strip(), out


def profile_spec(name: str, overrides: dict[str, Any] | None = None) -> str:
    """The one-string form of profile ``name`` with field ``overrides`` (sorted): ``"smoke:epochs=3"``;
    ``name`` itself without overrides. :func:`profile_of` reads it back."""
    if not overrides:
        return name
    return name + ":" + ",".join(f"{k}={','.join(map(str, v)) if isinstance(v, (tuple, list)) else v}"
                                 for k, v in sorted(overrides.items()))


def profile_of(profile: Any) -> Any:
    """The :class:`~zfrepro.config.Profile` that ``profile`` names: a Profile as it is, a name, or a name
    with overrides (``"smoke:epochs=3"``, see :func:`split_profile`), validated as ``zfrepro train``
    validates its ``--set`` (an unknown field or a bad value is a :class:`ConfigError`)."""
    if isinstance(profile, Profile):
        return profile
    name, overrides = split_profile(profile)
    if "arch" in overrides:
        raise ConfigError(f"profile {profile!r}: the architecture is the notebooks' arch parameter, not a profile "
                          "override")
    return get_profile(name, **overrides)


def resolve_profile(profile: str | Profile = "default", arch: str = "zfnet",
                    **overrides: Any) -> tuple[Profile, str]:
    """``(profile with overrides, arch)``, validated. ``arch`` may also come as an override
    (``--set arch=alexnet``); an unknown profile, field, arch, schedule or augmentation is a
    :class:`ConfigError`."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    o_arch = overrides.pop("arch", None)
    if o_arch is not None:
        if arch not in (None, "zfnet") and o_arch != arch:
            raise ConfigError(f"arch given twice ({arch!r} and arch={o_arch!r}): give it once")
        arch = str(o_arch)
    arch = arch or "zfnet"
    from .models import ARCHS

    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}: use one of {', '.join(sorted(ARCHS))}")
    prof = get_profile(profile, **overrides, arch=arch)
    return prof, arch
