"""Packaging: environment.yml and pyproject.toml name the same direct dependencies; no import side effects."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch": "torch"}
NOT_PACKAGES = {"python", "pip"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {_name(d) for d in project["dependencies"]}
    conda = set()
    in_pip = False
    section = ""
    for line in (ROOT / "environment.yml").read_text().splitlines():
        s = line.split("#")[0].rstrip()
        if re.match(r"^\w+:", s):
            section = s.split(":")[0]
            continue
        if section != "dependencies":
            continue
        if re.match(r"^\s+- pip:\s*$", s):
            in_pip = True
            continue
        m = re.match(r"^(\s+)- (.+)$", s)
        if not m:
            continue
        if in_pip and len(m.group(1)) > 2:
            assert m.group(2).strip().startswith('-e ".[dev]"'), m.group(2)
            continue
        in_pip = False
        conda.add(CONDA_TO_PIP.get(_name(m.group(2)), _name(m.group(2))))
    assert conda - NOT_PACKAGES == deps
    assert '-e ".[dev]"' in (ROOT / "environment.yml").read_text()
    dev = {_name(d) for d in project["optional-dependencies"]["dev"]}
    assert {"pytest", "papermill", "nbval", "captum"} <= dev | deps


def test_torch_versions_admit_the_local_wheels():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    spec = {_name(d): d for d in project["dependencies"]}
    from packaging.specifiers import SpecifierSet

    assert "2.14.1" in SpecifierSet(spec["torch"][len("torch"):])
    assert "0.29.1" in SpecifierSet(spec["torchvision"][len("torchvision"):])
    assert "2.4.0" in SpecifierSet(spec["torch"][len("torch"):]), "older releases must still be admitted"


def test_import_has_no_side_effects(tmp_path):
    code = ("import sys, zfrepro, zfrepro.models, zfrepro.data, zfrepro.config, zfrepro.plotting;"
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported';"
            "import torch; assert torch.get_default_dtype() == torch.float32")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ZFREPRO_CACHE": str(tmp_path / "c")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path)
    assert not (tmp_path / "c").exists(), "importing must not create the cache"


def test_package_never_names_the_offline_data_path():
    for f in (ROOT / "zfrepro").rglob("*.py"):
        text = f.read_text()
        assert "../shared" not in text and "imagenette-224" not in text, f
