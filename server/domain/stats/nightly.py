"""The nightly check: recount a year from the sources, compare every roll-up document with the
recount, log the collections that differ and repair them."""

from __future__ import annotations

import structlog
from pymongo import DeleteOne, InsertOne, ReplaceOne

from server.domain.stats.periods import Period
from server.domain.stats.rollups import (
    ORGS,
    OWNED_FIGURES,
    VOLUNTEERS,
    bulk,
    documents,
    recount,
)

log = structlog.get_logger(__name__)


def _rounded(figures: dict) -> dict:
    return {k: round(v, 2) for k, v in figures.items() if round(v, 2) != 0}


def _nonzero(parts: dict[str, dict]) -> dict:
    """A document's figures by month, caravan or county, rounded, without the all-zero ones."""
    return {k: f for k, f in ((k, _rounded(f)) for k, f in parts.items()) if f}


def _comparable(name: str, doc: dict | None) -> dict | None:
    """What must agree between a stored roll-up and the recount; None for an empty one.
    Float sums are compared to the hundredth, and zeros left behind by increments ignored."""
    if doc is None:
        return None
    if name == ORGS:
        shape = {
            "totals": _rounded(doc.get("totals", {})),
            "months": _nonzero(doc.get("months", {})),
            "caravans": _nonzero(doc.get("caravans", {})),
            "counties": _nonzero(doc.get("counties", {})),
        }
        empty = not shape["totals"]
    elif name == VOLUNTEERS:
        shape = {"hours": round(doc["hours"], 2)}
        empty = not shape["hours"]
    else:
        shape = _rounded({k: doc[k] for k in OWNED_FIGURES if k in doc})
        empty = not shape
    return None if empty else {**shape, "orgs": doc.get("orgs")}


async def reconcile(ctx, year: int, *, repair: bool = True, quiet: bool = False) -> dict[str, int]:
    """Recount the year from the sources and compare each roll-up document with it; documents
    that differ are logged (unless `quiet`: a bulk load expects them) and, with `repair`,
    replaced. Returns the mismatches by collection."""
    expected = await documents(ctx, await recount(ctx, Period.calendar_year(year)), year)
    mismatches = {}
    for name, docs in expected.items():
        stored = {d["_id"]: d async for d in ctx.db[name].find({"year": year})}
        wrong = [
            key
            for key in docs.keys() | stored.keys()
            if _comparable(name, docs.get(key)) != _comparable(name, stored.get(key))
        ]
        mismatches[name] = len(wrong)
        if wrong and not quiet:
            log.warning(
                "stats_rollup_mismatch",
                collection=name,
                year=year,
                documents=len(wrong),
                sample=sorted(wrong)[:5],
                repaired=repair,
            )
        if repair and not stored:  # a first count (after a bulk load): plain inserts are faster
            await bulk(ctx.db[name], [InsertOne(docs[key]) for key in wrong])
        elif repair:
            await bulk(
                ctx.db[name],
                [
                    ReplaceOne({"_id": key}, docs[key], upsert=True)
                    if key in docs
                    else DeleteOne({"_id": key})
                    for key in wrong
                ],
            )
    return mismatches
