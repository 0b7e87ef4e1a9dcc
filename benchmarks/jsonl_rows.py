"""The measurement scripts' rows: one JSON object per line in ``benchmarks/<script>.jsonl``, appended as each
run finishes (a killed sweep keeps the rows it had) and read back for the README's tables (``--table``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of ``path``, in the order they were measured (blank lines skipped)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Print ``row`` and append it to ``path`` as one line, flushed before the next measurement starts."""
    text = json.dumps(row)
    print(text, flush=True)
    with path.open("a") as fh:
        fh.write(text + "\n")


def snapshot_epochs(profile: str, epochs: str = "") -> list[int]:
    """The epochs to measure: ``epochs`` ("1,5,22"), else every snapshot of the profile's zfnet run."""
    from zfrepro.config import resolve_profile
    from zfrepro.runs import list_snapshots, run_dir_for

    if epochs:
        return [int(e) for e in epochs.split(",")]
    prof, arch = resolve_profile(profile)
    found = sorted(list_snapshots(run_dir_for(prof, arch)))
    if not found:
        raise SystemExit(f"no snapshots of the {profile} run in {run_dir_for(prof, arch)}: train it first "
                         f"(zfrepro reproduce --profile {profile} --only 02)")
    return found
