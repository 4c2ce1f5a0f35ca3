"""排程: caravan plans. The list of plans, starting one (period, caravans or a campaign,
requests), and a plan's page: a progress bar polled while the solver runs (the page stays usable,
showing the last result), the result on a map and per caravan-day, pins, exclusions, re-plan,
publish, and after publishing the crew who joined each visit (or that the visit was
withdrawn: its request cancelled by the site or declined). A timeline per caravan shows
its days (maintenance days marked) with each visit from arrival to departure.

The totals are the latest run's, each beside its change from the run before (the plan keeps
that run's totals, not its routes).
"""

from __future__ import annotations

import asyncio

from console.handlers.staff import StaffPage, parse_form
from server import geo
from server.clock import SHANGHAI
from server.domain import campaigns, caravans, identity, orgs, planning, rosters, sites
from server.domain.errors import DomainError, Forbidden
from server.domain.ids import parse_id
from server.web import ID

DISPATCH = "plan.dispatch"
PAGE_SIZE = 20
CHOICES = 200  # the create form's caravans and requests; a bigger plan takes all open requests
STATUS_NAMES = {"queued": "排队中", "running": "求解中", "done": "已完成", "failed": "失败"}
REASONS = {
    "excluded": "已被调度员移出",
    "no_allowed_day": "没有可安排的日期",
    "unreachable_in_duty_day": "一天的出车时段内到不了",
    "capacity": "车辆排不开",
    "pin_infeasible": "指定的车辆和日期排不下",
    "already_scheduled": "已由其他计划排期",
}
ROUTE_COLORS = ["#1f6feb", "#cf222e", "#2da44e", "#8250df", "#f08c00", "#0a7ea4", "#bf3989",
                "#9a6700", "#57606a", "#116329"]  # fmt: skip
OUTLINES = "geo/henan.json"


def _lnglat(doc: dict) -> list[float]:
    return list(geo.point_lnglat(doc["location"]))


class PlansPage(StaffPage):
    nav = "plans"

    async def get(self) -> None:
        scope = await self.scope(DISPATCH)
        result = await planning.list_plans(self.ctx, scope, self.arg("cursor"), PAGE_SIZE)
        self.render(
            "plans.html",
            result=result,
            statuses=STATUS_NAMES,
            org_names={o.id: o.name for o in await orgs.describe(self.ctx, scope)},
        )


class NewPlanPage(StaffPage):
    nav = "plans"

    async def get(self) -> None:
        await self.form()

    async def form(self, error: DomainError | None = None) -> None:
        scope = await self.scope(DISPATCH)
        fleet = await caravans.list_caravans(self.ctx, scope, None, CHOICES)
        requests = await caravans.list_requests(self.ctx, scope, status="open", limit=CHOICES)
        site_names = await sites.briefs(self.ctx, [parse_id(r.site_id) for r in requests.items])
        self.set_status(400 if error else 200)
        self.render(
            "plans_new.html",
            orgs=await orgs.describe(self.ctx, scope),
            caravans=[c for c in fleet.items if c.active],
            campaigns=(await campaigns.list_campaigns(self.ctx, scope, None, CHOICES)).items,
            requests=requests.items,
            site_names={str(k): v["name"] for k, v in site_names.items()},
            error=error,
            values={k: self.get_body_arguments(k) for k in self.request.body_arguments},
        )

    async def post(self) -> None:
        await self.require_anywhere(DISPATCH)
        values = {
            "org_id": self.arg("org_id"),
            "start_date": self.arg("start_date"),
            "end_date": self.arg("end_date"),
            "campaign_id": self.arg("campaign_id"),
            "caravan_ids": self.get_body_arguments("caravan_ids") or None,
            "request_ids": self.get_body_arguments("request_ids") or None,
            "time_limit_s": self.arg("time_limit_s"),
        }
        try:
            new = parse_form(planning.NewPlan, {k: v for k, v in values.items() if v is not None})
            await self.require(DISPATCH, new.org_id)
            plan_id = await planning.create_plan(self.ctx, new, created_by=self.staff_id)
        except Forbidden:
            raise
        except DomainError as exc:
            await self.form(exc)
            return
        self.redirect(f"/console/plans/{plan_id}")


class PlanBase(StaffPage):
    nav = "plans"

    async def authorize(self, plan_id: str) -> None:
        await self.require(DISPATCH, await planning.plan_org(self.ctx, plan_id))

    async def show(self, plan_id: str, error: DomainError | None = None) -> None:
        await self.authorize(plan_id)
        plan = await planning.get_plan(self.ctx, plan_id)
        fleet = await caravans.caravans_by_id(self.ctx, [parse_id(c) for c in plan.caravan_ids])
        depots = await caravans.depots_by_id(
            self.ctx, list({c["depot_id"] for c in fleet.values()})
        )
        site_ids = {s.site_id for r in plan.routes for s in r.stops}
        requests = await caravans.requests_by_id(self.ctx, [parse_id(r) for r in plan.request_ids])
        site_ids |= {str(r["site_id"]) for r in requests.values()}
        site_docs = {
            str(d["_id"]): d
            for d in await asyncio.gather(*(sites.get_site_doc(self.ctx, s) for s in site_ids))
        }
        site_of_request = {str(k): site_docs[str(v["site_id"])] for k, v in requests.items()}
        color = {c: ROUTE_COLORS[i % len(ROUTE_COLORS)] for i, c in enumerate(plan.caravan_ids)}
        doc = await planning.get_plan_doc(self.ctx, plan_id)
        days = planning.working_days(doc)
        self.set_status(400 if error else 200)
        self.render(
            "plans_detail.html",
            plan=plan,
            fleet={str(k): v for k, v in fleet.items()},
            site_of_request=site_of_request,
            color=color,
            days=days,
            timeline=_timeline(plan, fleet, days, doc, site_of_request),
            map_data=_map_data(plan, fleet, depots, site_docs, site_of_request, color),
            crews=await self._crews(plan) if plan.published_at else {},
            withdrawn=await planning.withdrawn_visits(self.ctx, plan) if plan.published_at else {},
            statuses=STATUS_NAMES,
            reasons=REASONS,
            visits=sum(len(r.stops) for r in plan.routes),
            minutes=sum(r.duration_min for r in plan.routes),
            error=error,
            done=self.get_query_argument("done", ""),
            outlines=OUTLINES,
            window=(doc["duty_start"], doc["duty_end"]),
        )

    async def _crews(self, plan: planning.PlanOut) -> dict:
        """request id → the roster of its visit's activity (the volunteers who joined as crew)."""
        rosters_of = await asyncio.gather(
            *(rosters.roster(self.ctx, p.activity_id) for p in plan.published)
        )
        return {p.request_id: r for p, r in zip(plan.published, rosters_of, strict=True)}


def _timeline(plan, fleet, days, doc, site_of_request) -> list[dict]:
    """Per caravan of the plan, a row per working day: off for maintenance, at a stay (set-up,
    opening or tear-down), idle (a run of days without a route in one row, so a month of 30
    caravans stays readable), or its route's visits placed on the duty window (`at`/`span` in
    minutes from its start, positioned by static/js/timeline.js, since the page's policy allows
    no inline style)."""
    start = sites.minutes(doc["duty_start"])
    window = sites.minutes(doc["duty_end"]) - start

    def minute(moment) -> int:
        local = moment.astimezone(SHANGHAI)
        return min(max(local.hour * 60 + local.minute - start, 0), window)

    route_of = {(r.caravan_id, r.date): r for r in plan.routes}
    stay_on: dict[tuple[str, str], str] = {}  # (caravan, day) → what the unit does at its stay
    for stay in plan.stays:
        for day in days:
            if stay.setup_from <= day <= stay.teardown_until:
                doing = "驻留" if stay.first_day <= day <= stay.last_day else "布展/撤展"
                stay_on[(stay.caravan_id, day)] = f"{doing}：{stay.site_name}"
    rows = []
    for n, cid in enumerate(plan.caravan_ids):
        caravan = fleet.get(parse_id(cid), {})
        off = set(caravan.get("unavailable", ()))
        lines = []
        for day in days:
            route = route_of.get((cid, day))
            visits = [
                {
                    "site": site_of_request.get(s.request_id, {}).get("name", "—"),
                    "arrive": s.arrive_at,
                    "depart": s.depart_at,
                    "at": minute(s.arrive_at),
                    "span": max(minute(s.depart_at) - minute(s.arrive_at), 1),
                }
                for s in (route.stops if route else [])
            ]
            stay = stay_on.get((cid, day))
            idle = route is None and day not in off and stay is None
            if idle and lines and lines[-1].get("idle"):
                lines[-1]["until"] = day
                continue
            lines.append(
                {"date": day, "off": day in off, "visits": visits, "stay": stay,
                 "idle": idle, "until": None,
                 "leave": minute(route.leave_at) if route else None,
                 "back": minute(route.return_at) if route else None}
            )  # fmt: skip
        rows.append({"id": cid, "name": caravan.get("name", "—"), "swatch": n % 10, "days": lines})
    return rows


def _map_data(plan, fleet, depots, site_docs, site_of_request, color) -> dict:
    """The map's points (depots and the plan's sites), a line per caravan-day, and the
    unassigned requests with their reasons; read by static/js/plan_map.js."""
    points = [
        {"name": d["name"], "kind": "depot", "lng": _lnglat(d)[0], "lat": _lnglat(d)[1]}
        for d in depots.values()
    ]
    points += [
        {"name": s["name"], "kind": s["kind"], "lng": _lnglat(s)[0], "lat": _lnglat(s)[1],
         "url": f"/console/sites/{s['_id']}"}
        for s in site_docs.values()
    ]  # fmt: skip
    routes = []
    for r in plan.routes:
        caravan = fleet[parse_id(r.caravan_id)]
        depot = _lnglat(depots[caravan["depot_id"]])
        coords = [depot, *(_lnglat(site_docs[s.site_id]) for s in r.stops), depot]
        name = f"{caravan['name']} {r.date}"
        routes.append(
            {"id": f"{r.caravan_id}-{r.date}", "name": name, "color": color[r.caravan_id],
             "coords": coords, "tip": f"{name}：{len(r.stops)} 站，{r.distance_km:.1f} 公里"}
        )  # fmt: skip
    unassigned = []
    for u in plan.unassigned:
        site = site_of_request.get(u.request_id)
        if site is not None:
            lng, lat = _lnglat(site)
            unassigned.append(
                {"name": site["name"], "lng": lng, "lat": lat,
                 "note": "未排入：" + REASONS.get(u.reason, u.reason)}
            )  # fmt: skip
    kinds = {"depot": "车场", "school": "学校", "village": "乡村", "community": "社区",
             "base": "基地", "other": "其他"}  # fmt: skip
    return {"points": points, "kinds": kinds, "routes": routes, "unassigned": unassigned}


class PlanPage(PlanBase):
    async def get(self, plan_id: str) -> None:
        await self.show(plan_id)


class ProgressFragment(PlanBase):
    """The progress bar, polled by htmx while the plan is solving; once solved, the whole page
    reloads to show the new result."""

    async def get(self, plan_id: str) -> None:
        await self.authorize(plan_id)
        plan = await planning.get_plan(self.ctx, plan_id)
        if plan.status in ("done", "failed") and self.is_fragment():
            self.set_header("HX-Refresh", "true")
        self.render("plans_progress.html", plan=plan, statuses=STATUS_NAMES)


class PlanEdit(PlanBase):
    """A form that changes the plan, then the plan's page again (or the refusal on it)."""

    async def change(self, plan_id: str, done: str, edit) -> None:
        await self.authorize(plan_id)
        try:
            await edit()
        except Forbidden:
            raise
        except DomainError as exc:
            await self.show(plan_id, exc)
            return
        self.redirect(f"/console/plans/{plan_id}?done={done}")


class PinPage(PlanEdit):
    async def post(self, plan_id: str) -> None:
        async def edit():
            values = {k: self.arg(k) for k in ("request_id", "caravan_id", "date")}
            new = parse_form(planning.NewPin, {k: v for k, v in values.items() if v})
            await planning.pin(self.ctx, plan_id, new)

        await self.change(plan_id, "pinned", edit)


class UnpinPage(PlanEdit):
    async def post(self, plan_id: str, request_id: str) -> None:
        await self.change(
            plan_id, "unpinned", lambda: planning.unpin(self.ctx, plan_id, request_id)
        )


class ExcludePage(PlanEdit):
    async def post(self, plan_id: str) -> None:
        request_id = self.arg("request_id") or ""
        await self.change(
            plan_id, "excluded", lambda: planning.exclude(self.ctx, plan_id, request_id)
        )


class ReplanPage(PlanEdit):
    async def post(self, plan_id: str) -> None:
        await self.change(plan_id, "replanned", lambda: planning.replan(self.ctx, plan_id))


class PublishPage(PlanEdit):
    async def post(self, plan_id: str) -> None:
        async def edit():
            openid = await identity.openid_of(self.ctx, self.staff_id)
            await planning.publish(self.ctx, plan_id, by=self.staff_id, publisher_openid=openid)

        await self.change(plan_id, "published", edit)


_P = rf"/console/plans/(?P<plan_id>{ID})"
ROUTES = [
    (r"/console/plans", PlansPage),
    (r"/console/plans/new", NewPlanPage),
    (_P, PlanPage),
    (_P + "/progress", ProgressFragment),
    (_P + "/pins", PinPage),
    (_P + rf"/pins/(?P<request_id>{ID})/remove", UnpinPage),
    (_P + "/exclusions", ExcludePage),
    (_P + "/replan", ReplanPage),
    (_P + "/publish", PublishPage),
]
