"""Run the notebooks in order with papermill (``zfrepro reproduce``).

Executed copies go to ``build/<profile>/``; the first failing notebook stops the run with a
one-line message naming it and its executed copy. Parameters are checked against each
notebook's ``parameters`` cell first (papermill itself only warns on unknown names).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, ZFReproError
from .io import project_root

__all__ = ["notebook_paths", "notebook_parameters", "check_parameters", "run_notebook", "reproduce"]


def notebook_paths(root: str | Path | None = None, only: Sequence[str] | None = None) -> list[Path]:
    """The ordered notebooks ``notebooks/NN_*.ipynb``; ``only`` keeps those whose NN prefix is listed."""
    nb_dir = Path(root or project_root()) / "notebooks"
    paths = sorted(nb_dir.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {o.zfill(2) for o in only}
        unknown = wanted - {p.name[:2] for p in paths}
        if unknown:
            raise ConfigError(f"no notebook numbered {', '.join(sorted(unknown))}: "
                              f"available are {', '.join(p.name[:2] for p in paths)}")
        paths = [p for p in paths if p.name[:2] in wanted]
    return paths


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """The names, types and defaults declared in a notebook's ``parameters`` cell."""
    import papermill

    return papermill.inspect_notebook(str(path))


def check_parameters(path: str | Path, params: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` if ``params`` names a parameter the notebook does not declare."""
    declared = notebook_parameters(path)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ConfigError(f"{Path(path).name} has no parameter {', '.join(unknown)}: "
                          f"valid ones are {', '.join(declared)}")


def run_notebook(path: str | Path, out_dir: str | Path, params: dict[str, Any], *,
                 kernel: str = "python3", progress: bool = False, timeout: int | None = None) -> Path:
    """Execute one notebook with papermill into ``out_dir`` (cwd = the notebook's folder)."""
    import papermill

    path, out_dir = Path(path), Path(out_dir)
    check_parameters(path, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    papermill.execute_notebook(str(path), str(out), parameters=params, kernel_name=kernel,
                               cwd=str(path.parent), progress_bar=progress, execution_timeout=timeout)
    return out


def _coerce_param(name: str, value: str, declared: dict[str, Any]) -> Any:
    """A ``--set`` string converted to the type the notebook declares for ``name``."""
    typ = (declared.get("inferred_type_name") or "").lower()
    try:
        if typ == "bool":
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ == "int":
            return int(value)
        if typ == "float":
            return float(value)
    except ValueError:
        raise ConfigError(f"--set {name}={value}: {name} must be {typ}") from None
    return value


def _fingerprint(nb: Path, params: dict[str, Any], upstream: list[str], profile: str) -> str:
    """What a notebook's result depends on: its cells, its parameters, the fingerprints of the
    notebooks before it in this run, and the results files they wrote."""
    import hashlib
    import json

    import nbformat

    from .io import results_dir

    cells = [c.source for c in nbformat.read(str(nb), as_version=4).cells]
    h = hashlib.sha256(json.dumps({"cells": cells, "params": params, "upstream": upstream}, sort_keys=True,
                                  default=str).encode())
    rdir = results_dir(profile)
    for up in sorted(rdir.glob("*.json")) if rdir.is_dir() else []:
        if up.stem[:2] < nb.name[:2]:
            h.update(up.name.encode() + up.read_bytes())
    return h.hexdigest()


def reproduce(profile: str = "default", *, data_root: str | None = None, device: str = "auto",
              only: Sequence[str] | None = None, root: str | Path | None = None,
              out_dir: str | Path | None = None, sets: dict[str, str] | None = None,
              force: bool = False) -> list[Path]:
    """Run every notebook (or ``only`` those numbered) for ``profile``; return the executed copies.

    Each notebook receives the parameters it declares among ``profile``, ``data_root``, ``device``
    and ``sets`` (``--set key=value``, converted to the declared type; a key that no selected
    notebook declares is rejected with the list of valid ones). A notebook whose cells,
    parameters and upstream results are unchanged since its last successful run is skipped (so a
    killed or failed run continues where it stopped; ``force=True`` reruns everything). Prints
    progress (which notebook, elapsed, an estimate from the previous runs' durations). Stops at
    the first failure with a :class:`ZFReproError` naming the notebook; writes
    ``results/<name>/RESULTS.md`` at the end, ``name`` being the profile for the canonical run and
    :func:`zfrepro.pretrained.output_name` (profile, model, weights, dataset) for a rerun on another
    model (``sets["arch"]``, ``sets["weights"]``) or dataset; executed copies go to ``build/<name>/``.
    With an ``arch`` other than ``zfnet`` only the notebooks that take a model (02, 03, 05-07) run.
    """
    import json

    from .config import get_profile
    from .io import atomic_write_json

    from .pretrained import output_name, parse_arch

    get_profile(profile)  # fail fast on an unknown profile
    root = Path(root or project_root())
    given: dict[str, Any] = {"profile": profile, "data_root": data_root or "", "device": device}
    paths = notebook_paths(root, only)
    declared = {nb: notebook_parameters(nb) for nb in paths}
    sets = dict(sets or {})
    valid = sorted({k for d in declared.values() for k in d} - set(given))
    unknown = sorted(k for k in sets if k not in valid)
    if unknown:
        raise ConfigError(f"--set {', '.join(unknown)}: no selected notebook has such a parameter; "
                          f"valid ones are {', '.join(valid)}")
    arch, weights = sets.get("arch", "zfnet"), sets.get("weights", "")
    parse_arch(arch)  # fail fast on an unknown arch
    if arch != "zfnet":  # 01 and 04 are about ZFNet and its training: only the notebooks that take a model run
        skipped = [nb.name for nb in paths if "arch" not in declared[nb]]
        paths = [nb for nb in paths if "arch" in declared[nb]]
        if skipped:
            print(f"arch={arch}: {', '.join(skipped)} skipped (about ZFNet and its training, no arch parameter)",
                  file=sys.stderr, flush=True)
    # a rerun on another model or dataset keeps its results and executed copies apart from the profile's own
    name = output_name(profile, arch, weights, data_root)
    out_dir = Path(out_dir or root / "build" / name)
    stamps = out_dir / ".stamps"

    def stamp_of(nb: Path) -> dict[str, Any]:
        try:
            return json.loads((stamps / f"{nb.stem}.json").read_text())
        except (OSError, ValueError):
            return {}
    done: list[Path] = []
    upstream: list[str] = []
    start = time.monotonic()
    for i, nb in enumerate(paths, 1):
        params = {k: v for k, v in given.items() if k in declared[nb]}
        params.update({k: _coerce_param(k, v, declared[nb][k]) for k, v in sets.items() if k in declared[nb]})
        fp = _fingerprint(nb, params, upstream, name)
        upstream.append(fp)
        old = stamp_of(nb)
        if not force and old.get("fingerprint") == fp and (out_dir / nb.name).is_file():
            print(f"[{i}/{len(paths)}] {nb.name}: unchanged since its last successful run, skipped "
                  "(--force reruns it)", file=sys.stderr, flush=True)
            done.append(out_dir / nb.name)
            continue
        left = sum(float(stamp_of(p).get("seconds", 0.0)) for p in paths[i - 1:])
        estimate = f", about {left / 60:.0f} min left by the last run's timings" if left else ""
        print(f"[{i}/{len(paths)}] {nb.name} (profile {profile}, {time.monotonic() - start:.0f}s elapsed{estimate})",
              file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            done.append(run_notebook(nb, out_dir, params))
        except Exception as exc:  # papermill's PapermillExecutionError carries the cell's error
            name = getattr(exc, "ename", type(exc).__name__)
            value = str(getattr(exc, "evalue", exc)).splitlines()[0] if str(getattr(exc, "evalue", exc)) else ""
            raise ZFReproError(f"notebook {nb.name} failed ({name}: {value}); "
                               f"see the executed copy {out_dir / nb.name}") from None
        atomic_write_json({"fingerprint": fp, "seconds": round(time.monotonic() - t0, 1), "params": params},
                          stamps / f"{nb.stem}.json")
    from .results import write_results_md

    summary = write_results_md(name)
    print(f"done: {len(done)} notebooks in {time.monotonic() - start:.0f}s, executed copies in {out_dir}; "
          f"results beside the paper in {summary}", file=sys.stderr)
    return done
