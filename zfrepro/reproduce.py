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


def reproduce(profile: str = "default", *, data_root: str | None = None, device: str = "auto",
              only: Sequence[str] | None = None, root: str | Path | None = None,
              out_dir: str | Path | None = None) -> list[Path]:
    """Run every notebook (or ``only`` those numbered) for ``profile``; return the executed copies.

    Each notebook receives the parameters it declares among ``profile``, ``data_root`` and
    ``device``. Stops at the first failure with a :class:`ZFReproError` naming the notebook.
    """
    from .config import get_profile

    get_profile(profile)  # fail fast on an unknown profile
    root = Path(root or project_root())
    out_dir = Path(out_dir or root / "build" / profile)
    given = {"profile": profile, "data_root": data_root or "", "device": device}
    done: list[Path] = []
    paths = notebook_paths(root, only)
    start = time.monotonic()
    for i, nb in enumerate(paths, 1):
        declared = notebook_parameters(nb)
        params = {k: v for k, v in given.items() if k in declared}
        print(f"[{i}/{len(paths)}] {nb.name} (profile {profile}, {time.monotonic() - start:.0f}s elapsed)",
              file=sys.stderr, flush=True)
        try:
            done.append(run_notebook(nb, out_dir, params))
        except Exception as exc:  # papermill's PapermillExecutionError carries the cell's error
            name = getattr(exc, "ename", type(exc).__name__)
            value = str(getattr(exc, "evalue", exc)).splitlines()[0] if str(getattr(exc, "evalue", exc)) else ""
            raise ZFReproError(f"notebook {nb.name} failed ({name}: {value}); "
                               f"see the executed copy {out_dir / nb.name}") from None
    from .results import write_results_md

    summary = write_results_md(profile)
    print(f"done: {len(done)} notebooks in {time.monotonic() - start:.0f}s, executed copies in {out_dir}; "
          f"results beside the paper in {summary}", file=sys.stderr)
    return done
