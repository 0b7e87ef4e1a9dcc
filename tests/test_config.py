"""Profiles: names, typed overrides, clear errors."""

from __future__ import annotations

import pytest

from zfrepro.config import PAPER_EPOCHS, PROFILES, get_profile
from zfrepro.errors import ConfigError


def test_profiles_exist_and_paper_is_the_paper():
    assert set(PROFILES) >= {"smoke", "default", "paper"}
    p = get_profile("paper")
    assert (p.input_size, p.resize, p.width, p.fc_width) == (224, 256, 1.0, 4096)
    assert (p.batch_size, p.lr, p.momentum, p.dropout, p.init) == (128, 1e-2, 0.9, 0.5, "paper")
    assert p.renorm and p.renorm_radius == 0.1 and p.pixel_scale == 1.0 and p.epochs == 70
    assert p.schedule == "plateau" and p.snapshot_epochs == PAPER_EPOCHS and p.eval_crops == 10 or p.eval_crops == 1
    assert p.deviations == ()
    assert get_profile("default").deviations, "default must list its deviations from the paper"


def test_overrides_are_typed_and_strings_are_converted():
    p = get_profile("smoke", epochs="3", lr="0.5", renorm="false", snapshot_epochs="1,3")
    assert p.epochs == 3 and p.lr == 0.5 and p.renorm is False and p.snapshot_epochs == (1, 3)
    assert get_profile("smoke", epochs=None).epochs == PROFILES["smoke"].epochs


def test_unknown_profile_and_field():
    with pytest.raises(ConfigError, match=r"unknown profile 'fast': use one of smoke, default, paper"):
        get_profile("fast")
    with pytest.raises(ConfigError, match=r"unknown profile field 'epoch': valid fields are .*epochs"):
        get_profile("smoke", epoch=3)
    with pytest.raises(ConfigError, match=r"'epochs' needs a int"):
        get_profile("smoke", epochs="many")
    with pytest.raises(ConfigError, match="exceeds resize"):
        get_profile("smoke", input_size=500)


def test_name_and_non_positive_sizes_are_one_line_errors():
    import pytest

    from zfrepro.config import get_profile
    from zfrepro.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown profile field 'name'"):
        get_profile("smoke", name="x")
    for field in ("resize", "input_size", "epochs", "batch_size", "fc_width", "width"):
        with pytest.raises(ConfigError, match=f"{field}=0.*must be positive"):
            get_profile("smoke", **{field: 0})


def test_train_command_takes_arch_as_a_set(monkeypatch):
    import argparse

    import pytest

    from zfrepro import cli
    from zfrepro import train as T
    from zfrepro.errors import ConfigError

    seen = {}
    monkeypatch.setattr(T, "train", lambda profile, **kw: seen.update(kw, profile=profile) or "run")
    args = cli.add_train_arguments(argparse.ArgumentParser()).parse_args(["--profile", "smoke", "--set", "arch=alexnet",
                                                                         "--set", "epochs=1"])
    assert cli.run_from_args(args) == "run" and seen["arch"] == "alexnet" and seen["epochs"] == "1"
    args = cli.add_train_arguments(argparse.ArgumentParser()).parse_args(["--arch", "alexnet", "--set", "arch=zfnet"])
    with pytest.raises(ConfigError, match="arch given twice"):
        cli.run_from_args(args)
