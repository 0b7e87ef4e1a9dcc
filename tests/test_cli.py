"""The zfrepro command: reproduce runs notebooks in order and stops at the first failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zfrepro.cli import main
from zfrepro.errors import ZFReproError
from zfrepro.reproduce import reproduce

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from nbtools import make_notebook  # noqa: E402


def _project(tmp_path: Path, bodies: list[str]) -> Path:
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    for i, body in enumerate(bodies, 1):
        make_notebook([("md", "# t (Fig. 0)"), ("params", 'profile: str = "default"  # profile'),
                       ("code", body)], nb_dir / f"{i:02d}_nb.ipynb")
    return tmp_path


def test_reproduce_runs_in_order_and_stops_at_first_failure(tmp_path):
    root = _project(tmp_path, [
        "open('ran_01', 'w').write(profile)",
        "raise ValueError('boom in two')",
        "open('ran_03', 'w').write(profile)",
    ])
    with pytest.raises(ZFReproError, match=r"notebook 02_nb.ipynb failed \(ValueError: boom in two\); see the executed copy"):
        reproduce("smoke", root=root, out_dir=tmp_path / "build")
    assert (root / "notebooks" / "ran_01").read_text() == "smoke"
    assert not (root / "notebooks" / "ran_03").exists()
    assert (tmp_path / "build" / "01_nb.ipynb").is_file()


def test_reproduce_only_selects_notebooks(tmp_path):
    root = _project(tmp_path, ["open('a', 'w').write('1')", "open('b', 'w').write('2')"])
    done = reproduce("smoke", root=root, out_dir=tmp_path / "build", only=["2"])
    assert [p.name for p in done] == ["02_nb.ipynb"]
    with pytest.raises(ZFReproError, match="no notebook numbered 07"):
        reproduce("smoke", root=root, only=["07"])


def test_cli_errors_are_one_line(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "--profile", "nope"])
    assert "invalid choice" in capsys.readouterr().err


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "zfrepro", "reproduce", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--data-root" in out.stdout and "--device" in out.stdout


def test_results_md_puts_ours_beside_the_paper(tmp_path, monkeypatch):
    import json

    from zfrepro.claims import claims_json
    from zfrepro.correspondence import table1_claims
    from zfrepro.io import write_results
    from zfrepro.occlusion import relative_drop_claim
    from zfrepro.results import write_results_md
    from zfrepro.structure import structure_claim

    monkeypatch.setenv("ZFREPRO_RESULTS", str(tmp_path))
    write_results("07_correspondence", {"faces": 12, "n": 5, "draws": 20, "table": [
        {"part": "nose", "layer": "conv5", "mean": 0.25, "std": 0.01, "paper_mean": 0.079, "paper_std": 0.017},
        {"part": "random", "layer": "conv5", "mean": 0.3, "std": 0.02, "paper_mean": 0.107, "paper_std": 0.017}],
        "parts_below_random": {"conv5": {"nose": True}}, "claims": claims_json(table1_claims({"conv5": {"nose": True}}))}, "p")
    write_results("06_occlusion", {"occluder": 32, "stride": 8, "claims": claims_json([relative_drop_claim(
        {"sensitive": 0.4, "random": 0.01})]), "sensitivity": {"images": 10.0, "sensitive_mean": 0.4, "random_mean": 0.01}}, "p")
    structure = {"median_r2": 0.91, "share_structured": 0.875, "threshold": 0.6, "n": 48}
    write_results("03_feature_visualization", {"arch": "zfnet", "filter_structure": structure, "layers": {"conv1": {
        "maps": 48, "active_on_val": 47, "shown": [1, 2], "projection_noise": {"median": 1.25, "q25": 1.0, "q75": 1.5},
        "projection_alignment": {"matched": {"median": 0.5, "q25": 0.4, "q75": 0.6},
                                 "control": {"median": 0.1, "q25": 0.0, "q75": 0.2}}}},
        "claims": claims_json([structure_claim(structure)])}, "p")
    (tmp_path / "p" / "broken.json").write_text("{not json")
    path = write_results_md("p")
    text = path.read_text()
    assert path == tmp_path / "p" / "RESULTS.md"
    assert "| nose | conv5 | 0.079 ± 0.017 | 0.250 ± 0.010 |" in text
    assert "| conv5: every part below random | every part below random (layer 5: 0.067-0.079 vs 0.107) | nose yes | yes |" in text
    assert ("| median relative drop ≥ 0.5 sensitive, ≤ 0.2 random | the class depends on covering the object, not any part "
            "of the image | random 0.01, sensitive 0.4 | **no** |") in text
    assert "| conv1 | 48 | 47 | 1, 2 | 1.25 [1.00, 1.50] | 0.50 [0.40, 0.60] | 0.10 [0.00, 0.20] |" in text
    assert "| share with structure R² ≥ 0.6 | 0.88 |" in text
    assert "(≥ 85 % with R² ≥ 0.6) | oriented edges and colour blobs (Fig. 2, 6c) | 0.875 | yes |" in text
    assert "Fig. 6" not in text  # no notebook 01 results: no section
    assert json.loads((tmp_path / "p" / "06_occlusion.json").read_text())["occluder"] == 32


def _typed_project(tmp_path: Path, bodies: list[str]) -> Path:
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    for i, body in enumerate(bodies, 1):
        make_notebook([("md", "# t (Fig. 0)"),
                       ("params", 'profile: str = "default"  # profile\nlayer: str = "conv5"  # layer\nk: int = 9  # k'),
                       ("code", body)], nb_dir / f"{i:02d}_nb.ipynb")
    return tmp_path


def test_reproduce_skips_unchanged_notebooks_and_reruns_changed_ones(tmp_path, capsys):
    body = "import pathlib\np = pathlib.Path('count_{n}')\np.write_text(str(int(p.read_text()) + 1 if p.exists() else 1))"
    root = _typed_project(tmp_path, [body.format(n=1), body.format(n=2)])
    count = lambda n: int((root / "notebooks" / f"count_{n}").read_text())  # noqa: E731
    reproduce("smoke", root=root, out_dir=tmp_path / "build")
    reproduce("smoke", root=root, out_dir=tmp_path / "build")
    assert (count(1), count(2)) == (1, 1)
    assert "02_nb.ipynb: unchanged since its last successful run, skipped" in capsys.readouterr().err
    # a changed parameter reruns that notebook (and those after it)
    reproduce("smoke", root=root, out_dir=tmp_path / "build", sets={"k": "3"})
    assert (count(1), count(2)) == (2, 2)
    # an edited notebook reruns itself and its successors, not its predecessors
    make_notebook([("md", "# t (Fig. 0)"), ("params", 'profile: str = "default"  # profile\nk: int = 9  # k'),
                   ("code", body.format(n=2) + "\n# edited")], root / "notebooks" / "02_nb.ipynb")
    reproduce("smoke", root=root, out_dir=tmp_path / "build", sets={"k": "3"})
    assert (count(1), count(2)) == (2, 3)
    reproduce("smoke", root=root, out_dir=tmp_path / "build", sets={"k": "3"}, force=True)
    assert (count(1), count(2)) == (3, 4)


def test_reproduce_set_converts_types_and_rejects_unknown_keys(tmp_path):
    root = _typed_project(tmp_path, ["open('got', 'w').write(repr((layer, k)))"])
    reproduce("smoke", root=root, out_dir=tmp_path / "build", sets={"layer": "conv3", "k": "4"})
    assert (root / "notebooks" / "got").read_text() == "('conv3', 4)"
    with pytest.raises(ZFReproError, match=r"--set lyer: no selected notebook has such a parameter; valid ones are k, layer"):
        reproduce("smoke", root=root, out_dir=tmp_path / "build", sets={"lyer": "conv3"})
    with pytest.raises(ZFReproError, match="k must be int"):
        reproduce("smoke", root=root, out_dir=tmp_path / "build", sets={"k": "many"})
    assert main(["reproduce", "--profile", "smoke", "--set", "novalue"]) == 2


def test_results_json_is_standard_json_without_nan(tmp_path: Path) -> None:
    """A table cell a network has no value for (NaN, e.g. Fig. 6's layer-2 share of the run shown
    without projections) is written as null: strict JSON readers (jq, JavaScript) accept the file."""
    import json
    import math

    import numpy as np

    from zfrepro.io import atomic_write_json

    path = atomic_write_json({"table": [{"a": float("nan"), "b": np.float32(0.5), "c": np.float64("inf")},
                                        {"a": 1.0, "b": (1, float("-inf"))}]}, tmp_path / "r.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data == {"table": [{"a": None, "b": 0.5, "c": None}, {"a": 1.0, "b": [1, None]}]}
    assert not any(isinstance(v, float) and math.isnan(v) for v in data["table"][0].values())


def test_the_ablation_grid_runs_only_when_asked(tmp_path, capsys):
    """Notebook 09 trains 24 networks: `zfrepro reproduce` leaves it out unless --with-ablations or --only names it."""
    from zfrepro.reproduce import OPT_IN_NOTEBOOKS, select_notebooks

    assert "09_ablations" in OPT_IN_NOTEBOOKS
    nbs = [Path(f"notebooks/{n}.ipynb") for n in ("01_architecture", "08_feature_generalization", "09_ablations")]
    assert [p.stem for p in select_notebooks(nbs, None, False)[0]] == ["01_architecture", "08_feature_generalization"]
    assert [p.stem for p in select_notebooks(nbs, None, False)[1]] == ["09_ablations"]
    assert select_notebooks(nbs, None, True) == (nbs, []) and select_notebooks(nbs, ["09"], False) == (nbs, [])
    root = tmp_path / "p"
    (root / "notebooks").mkdir(parents=True)
    for name in ("01_a", "09_ablations"):
        make_notebook([("md", "# t (Fig. 0)"), ("params", 'profile: str = "default"  # profile'),
                       ("code", f"open('ran_{name}', 'w').write(profile)")], root / "notebooks" / f"{name}.ipynb")
    done = reproduce("smoke", root=root, out_dir=tmp_path / "build")
    assert [p.name for p in done] == ["01_a.ipynb"] and not (root / "notebooks" / "ran_09_ablations").exists()
    assert "09_ablations.ipynb not run: Table 3 trains 24 networks" in capsys.readouterr().err
    from zfrepro.cli import build_parser

    assert build_parser().parse_args(["reproduce", "--with-ablations"]).with_ablations is True
