"""The record every analysis returns for a claim of the paper: :class:`Claim`.

Each analysis module owns its claim tests and their thresholds (:func:`zfrepro.models.map_size_claim`,
:func:`zfrepro.aliasing.fig6_claims`, :func:`zfrepro.structure.structure_claim`,
:func:`zfrepro.invariance.invariance_claims`, :func:`zfrepro.occlusion.occlusion_claim`,
:func:`zfrepro.correspondence.table1_claims`); notebooks print and store what they return and
:mod:`zfrepro.results` renders them (:func:`claims_rows`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

__all__ = ["Claim", "claims_rows"]


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
        return asdict(self)

    def __str__(self) -> str:
        verdict = {True: "holds", False: "does not hold", None: "not tested"}[self.holds]
        return f"{self.figure}: {verdict}: {self.name}"


def claims_rows(claims: Iterable[Claim]) -> list[list[Any]]:
    """``[name, holds]`` per claim: the rows of a "paper's claim | holds" table."""
    return [[c.name, c.holds] for c in claims]
