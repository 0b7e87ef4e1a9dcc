"""The record every analysis returns for a claim of the paper: :class:`Claim`, and its JSON form.

Each analysis module owns its claim tests and their thresholds (:func:`zfrepro.models.map_size_claim`,
:func:`zfrepro.aliasing.fig6_claims`, :func:`zfrepro.structure.structure_claim`,
:func:`zfrepro.top_units.evolution_claim`, :func:`zfrepro.invariance.invariance_claims`,
:func:`zfrepro.occlusion.occlusion_claim`, :func:`zfrepro.correspondence.table1_claims`,
:func:`zfrepro.transfer.transfer_claims`, :func:`zfrepro.ablation.table3_claims`). Every notebook
stores what they return under the key ``"claims"`` of its results file (:func:`claims_json`), and
:mod:`zfrepro.results` renders any notebook's claims from there (:func:`read_claims`) with no
per-notebook code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from .errors import ConfigError

__all__ = ["Claim", "claims_rows", "claims_json", "read_claims", "format_value"]

_FIELDS = ("figure", "name", "paper", "ours", "holds")


@dataclass(frozen=True)
class Claim:
    """One claim of the paper tested on our network: ``figure`` (``"Fig. 5"``), ``name`` (the claim as
    the tables state it), ``paper`` (what the paper reports), ``ours`` (the number or text behind the
    verdict) and ``holds`` (``None`` where it cannot be tested)."""

    figure: str
    name: str
    paper: Any
    ours: Any
    holds: bool | None

    def as_dict(self) -> dict[str, Any]:
        """The claim as plain JSON values (tuples become lists, numpy scalars Python numbers)."""
        return {k: _plain(v) for k, v in asdict(self).items()}

    def __str__(self) -> str:
        verdict = {True: "holds", False: "does not hold", None: "not tested"}[self.holds]
        return f"{self.figure}: {verdict}: {self.name}"


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 1) == 0:  # numpy / torch scalars
        return v.item()
    return v


def claims_rows(claims: Iterable[Claim]) -> list[list[Any]]:
    """``[name, holds]`` per claim: the rows of a "paper's claim | holds" table."""
    return [[c.name, c.holds] for c in claims]


def claims_json(claims: Iterable[Claim]) -> list[dict[str, Any]]:
    """The ``"claims"`` value of a results file: one :meth:`Claim.as_dict` per claim, in order."""
    return [c.as_dict() for c in claims]


def read_claims(records: Any, source: str = "a results file") -> list[Claim]:
    """The :class:`Claim` records of a results file's ``"claims"`` value (a list of :func:`claims_json`
    dicts); ``None`` or a missing key gives ``[]``. Anything else raises :class:`ConfigError` naming
    ``source`` and the fix (rerun the notebook that wrote it)."""
    if records is None:
        return []
    if not isinstance(records, list) or not all(isinstance(r, dict) and set(_FIELDS) <= r.keys() for r in records):
        raise ConfigError(f"{source}: 'claims' is not a list of claim records with keys {', '.join(_FIELDS)}; "
                          "rerun the notebook that wrote it (zfrepro reproduce --only NN --force)")
    return [Claim(**{k: r[k] for k in _FIELDS}) for r in records]


def format_value(v: Any, digits: int = 3) -> str:
    """A claim's ``paper`` or ``ours`` value as one short table cell: numbers to ``digits`` significant
    digits, pairs as ``a vs b``, dicts as ``key value`` pairs, booleans yes/no, ``None`` or an empty one as –."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, (list, tuple, dict)) and not v):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    if isinstance(v, (list, tuple)):
        return " vs ".join(format_value(x, digits) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k} {format_value(x, digits)}" for k, x in v.items())
    return str(v)
