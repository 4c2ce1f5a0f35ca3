"""The figures read off the trip logs: the facts statistics count (`trip_facts`), the visits
waiting for their site's confirmation (`pending_visits`, `awaiting_confirmation`) and a caravan's
year of trips (`year_of_trips`, for its target). Reads only; `trips` writes the logs."""

from __future__ import annotations

from datetime import date, datetime

import msgspec
from bson import ObjectId

from server.clock import SHANGHAI
from server.domain import sites


def parse_day(value: str | date) -> date:
    return value if isinstance(value, date) else datetime.strptime(value, "%Y-%m-%d").date()


def day_start(day: str | date) -> datetime:
    """Midnight of a Shanghai day, as an aware datetime."""
    return datetime.combine(parse_day(day), datetime.min.time(), SHANGHAI)


class TripFacts(msgspec.Struct, frozen=True):
    """What statistics need of a logged trip."""

    org_id: ObjectId
    caravan_id: ObjectId
    date: str
    km: float
    visits: list[dict]  # site_id, beneficiaries, confirmed


async def trip_facts(ctx, start: date, end: date) -> list[TripFacts]:
    """Trips driven on Shanghai days in [start, end)."""
    query = {"date": {"$gte": start.isoformat(), "$lt": end.isoformat()}}
    fields = {"org_id": 1, "caravan_id": 1, "date": 1, "km": 1, "visits.site_id": 1,
              "visits.beneficiaries": 1, "visits.confirmed": 1}  # fmt: skip
    return [
        TripFacts(
            org_id=doc["org_id"],
            caravan_id=doc["caravan_id"],
            date=doc["date"],
            km=doc["km"],
            visits=[
                {
                    "site_id": v["site_id"],
                    "beneficiaries": v["beneficiaries"],
                    "confirmed": v.get("confirmed", False),
                }
                for v in doc["visits"]
            ],
        )
        async for doc in ctx.db["trips"].find(query, fields)
    ]


class PendingVisit(msgspec.Struct, frozen=True):
    """A logged visit its site has not confirmed yet."""

    org_id: ObjectId
    caravan_id: ObjectId
    beneficiaries: int
    logged_at: datetime


async def pending_visits(ctx, year: int) -> list[PendingVisit]:
    """The visits of a year's trips still awaiting the site's confirmation: few, as sites
    confirm them, and read by an index on the unconfirmed ones."""
    query = {"visits.confirmed": False, "year": year}
    fields = {"org_id": 1, "caravan_id": 1, "logged_at": 1, "visits.beneficiaries": 1,
              "visits.confirmed": 1}  # fmt: skip
    return [
        PendingVisit(
            org_id=doc["org_id"],
            caravan_id=doc["caravan_id"],
            beneficiaries=v["beneficiaries"],
            logged_at=doc["logged_at"],
        )
        async for doc in ctx.db["trips"].find(query, fields)
        for v in doc["visits"]
        if not v.get("confirmed")
    ]


class WaitingVisit(msgspec.Struct):
    """A logged visit its site has not confirmed, as the site's admin sees it."""

    trip_id: str
    request_id: str
    site_id: str
    caravan_id: str
    date: str
    duration_min: int
    beneficiaries: int


async def awaiting_confirmation(
    ctx, org_ids: list[ObjectId], site_ids: list[ObjectId], *, limit: int
) -> list[WaitingVisit]:
    """The visits awaiting confirmation at these sites or at the sites of these organisations,
    the earliest day first: what a site's admin has left to confirm. Read by the index on the
    unconfirmed visits, which are few (sites confirm them)."""
    fields = {"caravan_id": 1, "date": 1, "visits": 1}
    docs = await ctx.db["trips"].find({"visits.confirmed": False}, fields).to_list(None)
    unconfirmed = [(d, v) for d in docs for v in d["visits"] if not v["confirmed"]]
    briefs = await sites.briefs(ctx, list({v["site_id"] for _, v in unconfirmed}))
    orgs_in, sites_in = set(org_ids), set(site_ids)
    mine = [
        (d, v)
        for d, v in unconfirmed
        if v["site_id"] in sites_in or briefs.get(v["site_id"], {}).get("org_id") in orgs_in
    ]
    mine.sort(key=lambda dv: (dv[0]["date"], dv[0]["_id"], dv[1]["request_id"]))
    return [
        WaitingVisit(
            trip_id=str(d["_id"]),
            request_id=str(v["request_id"]),
            site_id=str(v["site_id"]),
            caravan_id=str(d["caravan_id"]),
            date=d["date"],
            duration_min=v["duration_min"],
            beneficiaries=v["beneficiaries"],
        )
        for d, v in mine[:limit]
    ]


class YearOfTrips(msgspec.Struct, frozen=True):
    """A caravan's logged days of one year: field days (a visit its site confirmed), days with
    visits none of which is confirmed yet, and the km of every trip."""

    field_days: int
    waiting_days: int
    km: float


async def year_of_trips(ctx, caravan_id: ObjectId, year: int) -> YearOfTrips:
    """Read by the (caravan_id, date) index: one caravan's trips of one year."""
    days = {"$gte": f"{year}-01-01", "$lte": f"{year}-12-31"}
    done = waiting = 0
    km = 0.0
    found = ctx.db["trips"].find(
        {"caravan_id": caravan_id, "date": days}, {"km": 1, "visits.confirmed": 1}
    )
    async for trip in found:
        km += trip["km"]
        confirmed = [v["confirmed"] for v in trip["visits"]]
        if any(confirmed):
            done += 1
        elif confirmed:
            waiting += 1
    return YearOfTrips(field_days=done, waiting_days=waiting, km=round(km, 1))
