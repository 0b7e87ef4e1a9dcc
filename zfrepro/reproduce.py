"""Run the notebooks in order with papermill (``zfrepro reproduce``).

Executed copies go to ``build/<name>/``; the first failing notebook stops the run with a
one-line message naming it and its executed copy, after ``RESULTS.md`` is written for the
notebooks that ran (naming the failed one). Parameters are checked against each notebook's
``parameters`` cell first (papermill itself only warns on unknown names), and the data root
(``train/`` and the validation split, the same classes) before the first notebook starts.

``--set KEY=VALUE`` sets a notebook parameter, or, for a field of
:class:`~zfrepro.config.Profile` (``epochs``, ``lr``, ``resize``...), overrides the profile: the
notebooks that train or load the profile's network (:data:`PROFILE_OVERRIDE_NOTEBOOKS`) receive
``profile="smoke:epochs=3"`` (:func:`zfrepro.config.profile_of`), which trains its own network
(``runs/<profile>/<arch>-<hash>``) and writes apart (``results/smoke-epochs_3``). ``val_split``
names the folder of the validation split (``ZFREPRO_VAL_SPLIT``, :func:`zfrepro.data.val_split`).

A notebook counts as done (and a rerun skips it) only when its stamp matches *and* its executed
copy has every code cell run without an error output *and* every file it wrote (its results JSON,
its figures) is still there unchanged. The stamp is deleted before a notebook runs and written
only after it succeeded, so a killed or failed run never leaves a stale "done".

Where a notebook writes (``results/<name>/``, ``figures/`` or ``build/<name>/figures``) is
:func:`zfrepro.outputs.output_name`: the profile's own name only for the canonical run (every
parameter at the default in :data:`CANONICAL_PARAMETERS`); each notebook computes it from its own
parameters, so the same holds when it runs in JupyterLab.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, ZFReproError
from .io import project_root
from .outputs import changed_parameters, notebook_parameters

__all__ = ["OPT_IN_NOTEBOOKS", "select_notebooks", "PROFILE_OVERRIDE_NOTEBOOKS", "notebook_paths", "check_parameters",
           "run_notebook", "reproduce"]

#: The notebooks that take profile overrides (``--set epochs=3``) through their ``profile`` parameter: they load
#: the network and the data through :func:`zfrepro.loading.load_model` / :func:`zfrepro.data.load_split`,
#: which read ``"smoke:epochs=3"``. 01 and 04 call :func:`zfrepro.config.get_profile` / :mod:`zfrepro.train`
#: directly, 08 and 09 :mod:`zfrepro.transfer` / :mod:`zfrepro.ablation` with their own budgets: under profile
#: overrides they are skipped with that reason.
PROFILE_OVERRIDE_NOTEBOOKS = ("02_deconvnet", "03_feature_visualization", "05_invariance", "06_occlusion",
                              "07_correspondence")
#: Profile fields that ``--set`` does not override: the architecture and the seed are the notebooks' own
#: parameters (the model looked into, the maps or draws shown).
_NOT_PROFILE_OVERRIDES = ("name", "deviations", "arch", "seed")
#: Notebooks that ``zfrepro reproduce`` runs only when asked (``--with-ablations`` or ``--only``), and why.
OPT_IN_NOTEBOOKS: dict[str, str] = {
    "09_ablations": "Table 3 trains 24 networks (about 30 min on 2 free CPU cores for default, 78 min on shared "
                    "ones; 50 s for smoke); add --with-ablations or --only 09",
}
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


def check_parameters(path: str | Path, params: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` if ``params`` names a parameter the notebook does not declare."""
    declared = notebook_parameters(path)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ConfigError(f"{Path(path).name} has no parameter {', '.join(unknown)}: "
                          f"valid ones are {', '.join(declared)}")


class _NotebookProgress:
    """What :func:`run_notebook` shows while papermill runs a notebook: a line as each code cell starts
    (``cell 4/12``, its first line, the time spent in the notebook), a line every few seconds while one
    runs (its elapsed time and the last line it printed, e.g. a training's progress bar), and the
    kernel's own ``zfrepro:`` lines (a download, a training about to start) as they come. On a terminal
    the running line is rewritten in place every second; in a log it is a new line every 5 s (10 s after
    a cell's first two minutes). ``stream`` is the file written to (``sys.stderr``)."""

    def __init__(self, name: str, cells: list[Any], stream: Any = None) -> None:
        import threading

        self.name, self.stream = name, stream or sys.stderr
        self.code = {id(c): i for i, c in enumerate((c for c in cells if c.cell_type == "code" and c.source.strip()), 1)}
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.monotonic()
        self.cell: tuple[int, str, float] | None = None  # (number, first line, start)
        self.last = ""  # the kernel's last non-empty output line
        self.pending = {"stdout": "", "stderr": ""}
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.dirty = False  # a running line on a terminal awaits its newline

    def _emit(self, line: str, *, running: bool = False) -> None:
        with self.lock:
            if self.tty:
                self.stream.write(("\r\x1b[K" if self.dirty else "") + line + ("" if running else "\n"))
                self.dirty = running
            else:
                self.stream.write(line + "\n")
            self.stream.flush()

    def cell_start(self, cell: Any) -> None:
        n = self.code.get(id(cell))
        if n is None:
            return
        tags = cell.metadata.get("tags", [])
        first = "(the parameters cell)" if "parameters" in tags else "(the parameters given)" \
            if "injected-parameters" in tags else next((ln.strip() for ln in cell.source.splitlines() if ln.strip()), "")
        first = first if len(first) <= 70 else first[:67] + "..."
        self.cell, self.last = (n, first, time.monotonic()), ""
        self._emit(f"  {self.name} cell {n}/{len(self.code)}: {first}  ({time.monotonic() - self.t0:.0f}s in)")

    def cell_done(self) -> None:
        self.cell = None

    def _beat(self) -> None:
        next_at, beating = 5.0, None
        while not self.stop.wait(1.0):
            cell = self.cell
            if cell is None:
                continue
            if cell is not beating:  # a new cell: its first line after 5 s
                next_at, beating = 5.0, cell
            n, first, t = cell
            dt = time.monotonic() - t
            if not self.tty and dt < next_at:
                continue
            if not self.tty:
                next_at = dt + (5.0 if dt < 120 else 10.0)
            if dt < 5.0 and self.tty:
                continue
            last = f"; last output: {self.last}" if self.last else ""
            self._emit(f"  {self.name} cell {n}/{len(self.code)} running {dt:.0f}s{last}", running=True)

    def output(self, name: str, text: str) -> None:
        """A chunk of the kernel's stdout or stderr: remember the last line, echo ``zfrepro:`` lines."""
        buf = self.pending[name] + text
        *lines, self.pending[name] = buf.split("\n")
        for piece in lines + [self.pending[name]]:
            seg = piece.split("\r")
            part = next((x.strip() for x in reversed(seg) if x.strip()), "")
            if part:
                self.last = part if len(part) <= 100 else part[:97] + "..."
        for line in lines:
            line = line.split("\r")[-1].strip()
            if line.startswith("zfrepro:"):
                self._emit("  " + line)

    def writer(self, name: str) -> Any:
        progress = self

        class _Stream:
            def write(self, text: str) -> int:
                progress.output(name, text)
                return len(text)

            def flush(self) -> None:
                pass

        return _Stream()

    def close(self) -> None:
        self.stop.set()
        if self.dirty:
            self._emit("")


def run_notebook(path: str | Path, out_dir: str | Path, params: dict[str, Any], *,
                 kernel: str = "python3", progress: bool = True, timeout: int | None = None) -> Path:
    """Execute one notebook with papermill into ``out_dir`` (cwd = the notebook's folder).

    ``progress`` prints to stderr, while it runs, a line per code cell (``cell 4/12``, its first line,
    the time spent) and one every few seconds during a long cell (its time and last output line),
    and echoes the kernel's ``zfrepro:`` lines (a dataset download, a training about to start); see
    :class:`_NotebookProgress`. The kernel's own log is kept to errors (no "running over TCP without
    encryption" warning: it talks to this process on 127.0.0.1 only)."""
    import papermill
    from papermill.engines import NBClientEngine, papermill_engines

    path, out_dir = Path(path), Path(out_dir)
    check_parameters(path, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    shown: list[_NotebookProgress] = []

    class _Engine(NBClientEngine):  # papermill's nbclient engine, with the cell hooks reported to _NotebookProgress
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
            if not progress:
                return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)
            show = _NotebookProgress(path.stem, nb_man.nb.cells)
            shown.append(show)
            start, complete = nb_man.cell_start, nb_man.cell_complete

            def cell_start(cell: Any, cell_index: Any = None, **kw: Any) -> Any:
                show.cell_start(cell)
                return start(cell, cell_index, **kw)

            def cell_complete(cell: Any, cell_index: Any = None, **kw: Any) -> Any:
                show.cell_done()
                return complete(cell, cell_index, **kw)

            nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
            kwargs.update(stdout_file=show.writer("stdout"), stderr_file=show.writer("stderr"))
            show.thread.start()
            try:
                return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)
            finally:
                show.close()

    papermill_engines.register("zfrepro", _Engine)
    # the kernel runs in its own session (jupyter_client), so a Ctrl-C reaches only this process; on the way
    # out the kernel is killed at once: a graceful shutdown races the interrupted cell's reply (ZMQError)
    papermill.execute_notebook(str(path), str(out), parameters=params, kernel_name=kernel, engine_name="zfrepro",
                               cwd=str(path.parent), progress_bar=False, execution_timeout=timeout,
                               shutdown_kernel="immediate", extra_arguments=["--IPKernelApp.log_level=ERROR"])
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


def _file_identity(value: Any, data_ids: dict[str, str]) -> Any:
    """What a parameter naming a file or folder stands for: a file's size and modification time, a
    dataset folder's identity (its files' paths, sizes and times); ``None`` for anything else."""
    import os

    if not isinstance(value, str) or not value or len(value) > 4096:
        return None
    if os.sep not in value and not value.startswith("~") and not Path(value).suffix:
        return None  # a layer name, a profile, "auto": not a path
    path = Path(value).expanduser()
    try:
        if path.is_file():
            st = path.stat()
            return [str(path.resolve()), st.st_size, st.st_mtime_ns]
        if path.is_dir():
            key = str(path.resolve())
            if key not in data_ids:
                from .datasets import dataset_identity

                data_ids[key] = dataset_identity(path)
            return data_ids[key]
    except OSError:
        return None
    return None


def _fingerprint(nb: Path, params: dict[str, Any], upstream: list[str], name: str,
                 data_ids: dict[str, str]) -> str:
    """What a notebook's result depends on: its cells, its parameters (and the files and dataset they
    name), the fingerprints of the notebooks before it in this run, and the results files they wrote."""
    import hashlib
    import json
    import os

    import nbformat

    from .io import results_dir

    cells = [c.source for c in nbformat.read(str(nb), as_version=4).cells]
    files = {k: _file_identity(v, data_ids) for k, v in params.items()}
    if "data_root" in params and not params["data_root"] and os.environ.get("ZFREPRO_DATA"):
        files["data_root"] = _file_identity(os.environ["ZFREPRO_DATA"], data_ids)
    h = hashlib.sha256(json.dumps({"cells": cells, "params": params, "files": files, "upstream": upstream},
                                  sort_keys=True, default=str).encode())
    rdir = results_dir(name)
    for up in sorted(rdir.glob("*.json")) if rdir.is_dir() else []:
        if up.stem[:2] < nb.name[:2]:
            h.update(up.name.encode() + up.read_bytes())
    return h.hexdigest()


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def executed_ok(path: str | Path) -> bool:
    """Whether the executed copy ``path`` is a finished, successful run: readable, every non-empty
    code cell executed, no error output (a killed run leaves pending cells, a failed one an error)."""
    import nbformat

    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception:  # noqa: BLE001 - missing, torn or not a notebook: not done
        return False
    if (nb.metadata.get("papermill") or {}).get("exception"):
        return False
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        if c.source.strip() and c.get("execution_count") is None:
            return False
        if any(o.get("output_type") == "error" for o in c.get("outputs", [])):
            return False
        if (c.metadata.get("papermill") or {}).get("status") in ("pending", "running") or \
                (c.metadata.get("papermill") or {}).get("exception"):
            return False
    return True


def _written_since(t0_ns: int, dirs: Sequence[Path]) -> dict[str, str]:
    """The files in ``dirs`` written since ``t0_ns`` (a notebook's results and figures), with their hashes."""
    out = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            try:
                if f.is_file() and not f.name.startswith(".") and f.name != "RESULTS.md" and \
                        f.stat().st_mtime_ns >= t0_ns:
                    out[str(f)] = _sha256(f)
            except OSError:
                continue
    return out


def _outputs_intact(stamp: dict[str, Any]) -> bool:
    for f, digest in (stamp.get("outputs") or {}).items():
        try:
            if _sha256(Path(f)) != digest:
                return False
        except OSError:
            return False
    return True


def _split_sets(sets: dict[str, str], declared: dict[Path, dict[str, Any]], given: dict[str, Any]
                ) -> tuple[dict[str, str], dict[str, str]]:
    """``--set`` values → (notebook parameters, profile overrides); an unknown key is a :class:`ConfigError`
    listing the notebooks' parameters and the profile fields."""
    from dataclasses import fields

    from .config import Profile

    profile_fields = [f.name for f in fields(Profile) if f.name not in _NOT_PROFILE_OVERRIDES]
    valid = sorted({k for d in declared.values() for k in d} - set(given))
    params = {k: v for k, v in sets.items() if k not in profile_fields}
    overrides = {k: v for k, v in sets.items() if k in profile_fields}
    unknown = sorted(k for k in params if k not in valid)
    if unknown:
        raise ConfigError(f"--set {', '.join(unknown)}: no selected notebook has such a parameter; "
                          f"valid ones are {', '.join(valid)} (or a profile field, for the notebooks that train or "
                          f"load the profile's network: {', '.join(profile_fields)})")
    return params, overrides


def select_notebooks(paths: Sequence[Path], only: Sequence[str] | None, with_ablations: bool) -> tuple[list[Path], list[Path]]:
    """``(to run, left out)``: the notebooks of :data:`OPT_IN_NOTEBOOKS` run only when named in ``only``
    or with ``with_ablations``, so the main job keeps its time budget."""
    if only or with_ablations:
        return list(paths), []
    return ([nb for nb in paths if nb.stem not in OPT_IN_NOTEBOOKS],
            [nb for nb in paths if nb.stem in OPT_IN_NOTEBOOKS])


def _check_data(data_root: str | None) -> None:
    """The data root's layout, before any notebook runs (nothing written on failure)."""
    from .datasets import check_data_root

    check_data_root(data_root)


def reproduce(profile: str = "default", *, data_root: str | None = None, device: str = "auto",
              only: Sequence[str] | None = None, root: str | Path | None = None,
              out_dir: str | Path | None = None, sets: dict[str, str] | None = None,
              force: bool = False, val_split: str | None = None, with_ablations: bool = False) -> list[Path]:
    """Run every notebook (or ``only`` those numbered) for ``profile``; return the executed copies.
    Notebook 09 (Table 3's grid of trainings, :data:`OPT_IN_NOTEBOOKS`) runs only with
    ``with_ablations=True`` or when named in ``only``. ``val_split`` names the validation split's folder (``test``; default ``$ZFREPRO_VAL_SPLIT`` or
    ``val``): set for the whole run, the notebooks' kernels included. See :func:`_reproduce`."""
    import os

    from .datasets import VAL_SPLIT_ENV, val_split as _val_split

    if not val_split:
        return _reproduce(profile, data_root=data_root, device=device, only=only, root=root, out_dir=out_dir,
                          sets=sets, force=force, with_ablations=with_ablations)
    old = os.environ.get(VAL_SPLIT_ENV)
    os.environ[VAL_SPLIT_ENV] = str(val_split)
    try:
        _val_split()  # a bad name is one line
        return _reproduce(profile, data_root=data_root, device=device, only=only, root=root, out_dir=out_dir,
                          sets=sets, force=force, with_ablations=with_ablations)
    finally:
        if old is None:
            os.environ.pop(VAL_SPLIT_ENV, None)
        else:
            os.environ[VAL_SPLIT_ENV] = old


def _reproduce(profile: str = "default", *, data_root: str | None = None, device: str = "auto",
               only: Sequence[str] | None = None, root: str | Path | None = None,
               out_dir: str | Path | None = None, sets: dict[str, str] | None = None,
               force: bool = False, with_ablations: bool = False) -> list[Path]:
    """Run every notebook (or ``only`` those numbered) for ``profile``; return the executed copies.

    Each notebook receives the parameters it declares among ``profile``, ``data_root``, ``device``
    and ``sets`` (``--set key=value``, converted to the declared type; a key that no selected
    notebook declares is rejected with the list of valid ones). A notebook is skipped when its
    cells, parameters (and the files they name), dataset and upstream results are unchanged since
    its last successful run, its executed copy is complete and error-free and the files it wrote
    are intact (so a killed or failed run continues where it stopped; ``force=True`` reruns
    everything). Prints progress (which notebook, elapsed, an estimate from the previous runs'
    durations). Stops at the first failure with a :class:`ZFReproError` naming the notebook, after
    writing RESULTS.md for the notebooks that ran (the failed one named in it).

    ``sets`` keys that are :class:`~zfrepro.config.Profile` fields (not ``arch``/``seed``) are profile
    overrides: the notebooks of :data:`PROFILE_OVERRIDE_NOTEBOOKS` receive ``profile="NAME:k=v,..."``
    and write under ``NAME-k_v`` (their own trained network in ``runs/``); the others are skipped
    with the reason. The data root is checked (:func:`zfrepro.data.check_data_root`) before the first
    notebook starts.

    Each notebook writes under its :func:`zfrepro.outputs.output_name`: the profile's own name
    for the canonical run, ``<profile>-<model>-<dataset>`` for another model or dataset, and
    ``<profile>-<changed parameters>`` for a ``sets`` value or ``device`` other than the
    canonical one (``results/<name>/``, ``build/<name>/`` for executed copies and figures), so
    that no rerun touches the committed ``default`` results and gallery. A notebook to which
    none of the given changes applies would repeat the canonical run: it is skipped with a note.
    ``results/<name>/RESULTS.md`` is written at the end for every name written. With an ``arch``
    other than ``zfnet`` only the notebooks that take a model (02, 03, 05-07) run.
    """
    import json

    from .config import get_profile
    from .io import atomic_write_json, results_dir, storage_error
    from .plotting import figure_dir
    from .models import parse_arch
    from .outputs import output_name

    from .config import profile_of, profile_spec

    get_profile(profile)  # fail fast on an unknown profile
    root = Path(root or project_root())
    given: dict[str, Any] = {"profile": profile, "data_root": data_root or "", "device": device}
    paths, opted = select_notebooks(notebook_paths(root, only), only, with_ablations)
    for nb in opted:
        print(f"{nb.name} not run: {OPT_IN_NOTEBOOKS[nb.stem]}", file=sys.stderr, flush=True)
    declared = {nb: notebook_parameters(nb) for nb in paths}
    sets, overrides = _split_sets(dict(sets or {}), declared, given)
    arch, weights = sets.get("arch", "zfnet"), sets.get("weights", "")
    parse_arch(arch)  # fail fast on an unknown arch
    notes: dict[str, str] = {}  # notebook → why it is not run, for RESULTS.md
    if arch != "zfnet":  # 01 and 04 are about ZFNet and its training: only the notebooks that take a model run
        skipped = [nb.name for nb in paths if "arch" not in declared[nb]]
        paths = [nb for nb in paths if "arch" in declared[nb]]
        notes.update({Path(n).stem: f"skipped: arch={arch} (about ZFNet and its training, no arch parameter)"
                      for n in skipped})
        if skipped:
            print(f"arch={arch}: {', '.join(skipped)} skipped (about ZFNet and its training, no arch parameter)",
                  file=sys.stderr, flush=True)
    spec = profile
    if overrides:
        spec = profile_spec(profile, overrides)
        profile_of(spec)  # a bad field value is one line, before anything runs

        def takes(nb: Path) -> bool:  # through its profile, or as parameters of its own (09's epochs)
            return nb.stem in PROFILE_OVERRIDE_NOTEBOOKS or all(k in declared[nb] for k in overrides)
        skipped = [nb.name for nb in paths if not takes(nb)]
        paths = [nb for nb in paths if takes(nb)]
        if skipped:
            why = (f"profile overrides ({', '.join(f'{k}={v}' for k, v in sorted(overrides.items()))}) reach only the "
                   "notebooks that load the network through zfrepro.loading.load_model (02, 03, 05-07)")
            notes.update({Path(n).stem: f"skipped: {why}" for n in skipped})
            print(f"{', '.join(skipped)} skipped: {why}", file=sys.stderr, flush=True)
        if not paths:
            raise ConfigError(f"--set {', '.join(sorted(overrides))}: a profile field, but none of the selected "
                              f"notebooks takes profile overrides (those that do: "
                              f"{', '.join(n[:2] for n in PROFILE_OVERRIDE_NOTEBOOKS)})")
    _check_data(data_root)  # train/ and the validation split, before the first notebook writes anything
    base = output_name(profile, arch, weights, data_root)  # the model's and dataset's name, without parameters
    plan: list[tuple[Path, dict[str, Any], str]] = []
    for nb in paths:
        params = {k: v for k, v in given.items() if k in declared[nb]}
        params.update({k: _coerce_param(k, v, declared[nb][k]) for k, v in sets.items() if k in declared[nb]})
        if overrides and nb.stem in PROFILE_OVERRIDE_NOTEBOOKS:
            params["profile"] = spec  # "smoke:epochs=3": its own network, written apart
        elif overrides:  # a notebook with parameters of those names (09's epochs) takes them as its own
            params.update({k: _coerce_param(k, v, declared[nb][k]) for k, v in overrides.items()})
        plan.append((nb, params, output_name(params.get("profile", profile), arch, weights, data_root, notebook=nb,
                                             params=params)))
    changed: dict[str, Any] = {}
    for nb, params, _ in plan:
        changed.update(changed_parameters(nb, params))
    if changed and base == profile:
        # a notebook none of the changes applies to would write the canonical results again
        same = [nb.name for nb, _, name in plan if name == profile]
        plan = [(nb, params, name) for nb, params, name in plan if name != profile]
        if same:
            what = ", ".join(f"{k}={v}" for k, v in changed.items())
            print(f"{', '.join(same)} skipped: {what} does not apply to {'it' if len(same) == 1 else 'them'}, "
                  f"so {'its' if len(same) == 1 else 'their'} results are those of the canonical run "
                  f"(results/{profile})", file=sys.stderr, flush=True)

    def copies_dir(name: str) -> Path:
        return Path(out_dir) if out_dir else root / "build" / name

    def stamp_path(nb: Path, name: str) -> Path:
        return copies_dir(name) / ".stamps" / f"{nb.stem}.json"

    def summarize(upto: int, failed: str = "") -> list[str]:
        """RESULTS.md for every name the first ``upto`` notebooks of the plan write, with the notes."""
        from .results import write_results_md

        names = list(dict.fromkeys(name for _, _, name in plan[:upto]))
        extra = dict(notes)
        if failed:
            extra[plan[upto - 1][0].stem] = failed
            for nb, _, _ in plan[upto:]:
                extra[nb.stem] = f"not run: the run stopped at the failure of {plan[upto - 1][0].name}"
        try:
            return [str(write_results_md(n, extra or None)) for n in names]
        except OSError as exc:
            raise storage_error(exc, Path(exc.filename or results_dir(names[0]) / "RESULTS.md"), "RESULTS.md") from None

    def stamp_of(nb: Path, name: str) -> dict[str, Any]:
        try:
            return json.loads(stamp_path(nb, name).read_text())
        except (OSError, ValueError):
            return {}
    if not plan:
        print("nothing to run", file=sys.stderr)
        return []
    done: list[Path] = []
    upstream: dict[str, list[str]] = {}
    prev_end_ns = 0
    data_ids: dict[str, str] = {}
    start = time.monotonic()
    for i, (nb, params, name) in enumerate(plan, 1):
        fp = _fingerprint(nb, params, upstream.setdefault(name, []), name, data_ids)
        upstream[name].append(fp)
        old = stamp_of(nb, name)
        copy = copies_dir(name) / nb.name
        if not force and old.get("fingerprint") == fp and executed_ok(copy) and _outputs_intact(old):
            print(f"[{i}/{len(plan)}] {nb.name}: unchanged since its last successful run, skipped "
                  "(--force reruns it)", file=sys.stderr, flush=True)
            done.append(copy)
            continue
        left = sum(float(stamp_of(p, n).get("seconds", 0.0)) for p, _, n in plan[i - 1:])
        estimate = (f", about {left / 60:.0f} min left by the last run's timings" if left >= 90 else
                    f", about {left:.0f} s left by the last run's timings" if left else "")
        where = "" if name == profile else f", writing to results/{name}"
        print(f"[{i}/{len(plan)}] {nb.name} (profile {profile}{where}, {time.monotonic() - start:.0f}s elapsed"
              f"{estimate})", file=sys.stderr, flush=True)
        try:
            stamp_path(nb, name).unlink(missing_ok=True)  # not "done" until it has succeeded again
        except OSError as exc:
            raise storage_error(exc, stamp_path(nb, name), "the stamp") from None
        # files this notebook writes: file times may lag the clock a little, but not behind the previous notebook
        t0, t0_ns = time.monotonic(), max(time.time_ns() - 2_000_000_000, prev_end_ns)
        try:
            done.append(run_notebook(nb, copies_dir(name), params))
        except Exception as exc:  # papermill's PapermillExecutionError carries the cell's error
            ename = getattr(exc, "ename", type(exc).__name__)
            value = str(getattr(exc, "evalue", exc)).splitlines()[0] if str(getattr(exc, "evalue", exc)) else ""
            summarize(i, f"failed ({ename}: {value}); see the executed copy {copy}")
            raise ZFReproError(f"notebook {nb.name} failed ({ename}: {value}); "
                               f"see the executed copy {copy}") from None
        if not executed_ok(copy):
            summarize(i, f"failed: its executed copy {copy} has unexecuted or failed cells")
            raise ZFReproError(f"notebook {nb.name} finished but its executed copy {copy} has unexecuted or failed "
                               "cells: rerun the same command")
        outputs = _written_since(t0_ns, [results_dir(name), figure_dir(name)])
        try:
            atomic_write_json({"fingerprint": fp, "seconds": round(time.monotonic() - t0, 1), "params": params,
                               "outputs": outputs}, stamp_path(nb, name))
        except OSError as exc:  # the notebook's own files are written; only its "done" mark is missing
            raise storage_error(exc, stamp_path(nb, name), "the stamp") from None
        prev_end_ns = time.time_ns()
    names = list(dict.fromkeys(name for _, _, name in plan))
    summaries = summarize(len(plan))
    def shown(p: Path) -> str:  # relative to the project when inside it
        try:
            return f"{Path(p).resolve().relative_to(root.resolve())}/"
        except ValueError:
            return f"{p}/"
    print(f"done: {len(done)} notebooks in {time.monotonic() - start:.0f}s; figures in "
          f"{', '.join(dict.fromkeys(shown(figure_dir(n)) for n in names))}, executed copies in "
          f"{', '.join(dict.fromkeys(shown(copies_dir(n)) for n in names))}; results beside the paper in "
          f"{', '.join(summaries)}", file=sys.stderr)
    return done
