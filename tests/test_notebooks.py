"""Every notebooks/NN_*.ipynb, executed in order by papermill with the smoke profile, plus hygiene.

New notebooks are covered without touching this file. Executed copies go to build/smoke/.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import nbformat
import pytest

from zfrepro.errors import ConfigError
from zfrepro.reproduce import check_parameters, notebook_parameters, notebook_paths, run_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = notebook_paths(ROOT)
OUT = ROOT / "build" / "smoke"


def test_there_are_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name == "01_architecture.ipynb"
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert numbers == sorted(set(numbers)), "notebook numbers must be unique and ordered"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_hygiene(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs before committing"
    first, second = nb.cells[0], nb.cells[1]
    assert first.cell_type == "markdown" and re.search(r"Fig\.|Table", first.source)
    assert re.search(r"[Rr]untime", first.source) and re.search(r"differ", first.source)
    assert second.cell_type == "code" and "parameters" in second.metadata.get("tags", [])
    for line in second.source.splitlines():
        if line.strip():
            assert re.match(r"^\w+: [\w\[\], |]+ = .+  # .+", line), f"parameter needs a type and a comment: {line}"
    # papermill must parse every declaration (it silently drops lines it cannot, e.g. quotes in a comment)
    names = [line.split(":")[0] for line in second.source.splitlines() if line.strip()]
    assert sorted(notebook_parameters(nb_path)) == sorted(names)
    for c in code:
        src = "\n".join(l for l in c.source.splitlines() if not l.lstrip().startswith(("%", "!")))
        tree = ast.parse(src)
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) for n in ast.walk(tree)), \
            "notebooks call the package; no def/class"
        assert "plt.show" not in c.source and "pip install" not in c.source


def test_unknown_parameter_is_rejected():
    with pytest.raises(ConfigError, match=r"has no parameter bogus: valid ones are .*profile"):
        check_parameters(NOTEBOOKS[0], {"profile": "smoke", "bogus": 1})


@pytest.mark.slow
@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_with_smoke_profile(nb_path, data_root):
    declared = notebook_parameters(nb_path)
    params = {"profile": "smoke", "data_root": str(data_root), "device": "cpu"}
    params = {k: v for k, v in params.items() if k in declared}
    assert "profile" in declared
    out = run_notebook(nb_path, OUT, params, timeout=1800)
    executed = nbformat.read(out, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "every notebook shows at least one figure"


@pytest.mark.slow
def test_rerun_one_notebook_with_another_layer(data_root, tmp_path):
    """`zfrepro reproduce --only 02 --set layer=conv3`: one notebook, another layer, no code edited."""
    from zfrepro.reproduce import reproduce

    out = reproduce("smoke", data_root=str(data_root), device="cpu", only=["02"], sets={"layer": "conv3"},
                    out_dir=tmp_path / "build", force=True)
    executed = nbformat.read(out[0], as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "conv3 map" in text and "conv5 map" not in text


@pytest.mark.slow
def test_rerun_fig6_at_another_conv1_step(data_root, tmp_path):
    """`--only 01 --set comparison_first_lr_mult=32`: Fig. 6's three runs at another conv1 learning-rate
    multiplier, trained apart from the profile's own (README, "Why Fig. 6 (a)")."""
    from zfrepro.reproduce import reproduce

    out = reproduce("smoke", data_root=str(data_root), device="cpu", only=["01"],
                    sets={"comparison_first_lr_mult": "32", "comparison_epochs": "1"}, out_dir=tmp_path / "build", force=True)
    executed = nbformat.read(out[0], as_version=4)
    shown = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                    for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "'conv1 lr ×': 32.0" in shown


@pytest.mark.slow
def test_rerun_on_another_imagefolder_dataset(tmp_path, monkeypatch):
    """Another dataset (3 classes of synthetic images, not Imagenette): the notebook trains its own
    network on it (its own run directory) and runs through."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("val", 10)):
        for k, cls in enumerate(("red", "green", "blue")):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 60, (80, 96, 3), dtype=np.uint8)
                a[..., k] += 150  # the class is the dominant colour
                Image.fromarray(a).save(d / f"{i}.png")
    monkeypatch.setenv("ZFREPRO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("ZFREPRO_RESULTS", str(tmp_path / "results"))
    nb = ROOT / "notebooks" / "05_invariance.ipynb"
    out = run_notebook(nb, tmp_path / "build", {"profile": "smoke", "data_root": str(root), "device": "cpu",
                                                "n_images": 3}, timeout=900)
    executed = nbformat.read(out, as_version=4)
    assert not [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    runs = list((tmp_path / "runs" / "smoke").iterdir())
    assert len(runs) == 1 and "-data" in runs[0].name  # its own run directory, tagged with the dataset


@pytest.mark.slow
def test_rerun_with_torchvision_alexnet_and_a_weights_file(data_root, tmp_path, monkeypatch):
    """`zfrepro reproduce --set arch=torchvision:alexnet --set weights=PATH`: the notebooks that look into a
    network run on torchvision's AlexNet with the user's state_dict, its own inputs (224 px, ImageNet
    normalisation, labels as ImageNet indices), and write apart from the profile's results."""
    import json

    import torch
    import torchvision

    from zfrepro.outputs import output_name
    from zfrepro.reproduce import reproduce

    torch.manual_seed(0)
    weights = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), weights)
    monkeypatch.setenv("ZFREPRO_RESULTS", str(tmp_path / "results"))
    sets = {"arch": "torchvision:alexnet", "weights": str(weights), "sample": "6", "layer": "conv4"}
    out = reproduce("smoke", data_root=str(data_root), device="cpu", only=["02", "04", "06", "07"], sets=sets,
                    out_dir=tmp_path / "build", force=True)
    assert [p.name[:2] for p in out] == ["02", "06", "07"]  # 04 is about training ZFNet: skipped
    name = output_name("smoke", "torchvision:alexnet", str(weights), str(data_root))
    results = tmp_path / "results" / name
    assert sorted(p.name for p in results.iterdir()) == ["02_deconvnet.json", "06_occlusion.json",
                                                         "07_correspondence.json", "RESULTS.md"]
    assert not (tmp_path / "results" / "smoke").exists()
    for f in ("02_deconvnet", "06_occlusion", "07_correspondence"):
        r = json.loads((results / f"{f}.json").read_text())
        assert r["arch"] == "torchvision:alexnet" and r["weights"] == str(weights)
    assert "torchvision:alexnet" in (results / "RESULTS.md").read_text()
    text = "".join(o.get("text", "") for c in nbformat.read(out[0], as_version=4).cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "conv4 map" in text
