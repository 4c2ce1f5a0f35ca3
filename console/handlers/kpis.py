"""指标: a year's 活动次数, 行驶里程 and 受益人次 of the caravans of an organisation's subtree,
per county and per caravan (the same `caravan_kpis.kpis` as `GET /api/v1/caravans/kpis`), the
confirmed figures beside the visits still awaiting the site's confirmation, and a bar chart.

行驶里程 counts every logged trip (the domain keeps no pending km), so it has one column.

Beside them each caravan's target for the year (field days, km) and its progress; whoever may
set targets (the association: `target.set`) sets a caravan's here, for the year shown, as
`PUT /api/v1/caravans/{id}/targets` does.
"""

from __future__ import annotations

from urllib.parse import urlencode

from console.handlers.staff import StaffPage, parse_form
from server.domain import access, caravans, orgs
from server.domain.errors import DomainError, Forbidden, InvalidRequest
from server.domain.ids import parse_id
from server.domain.stats import caravan_kpis
from server.web import ID

DISPATCH = "plan.dispatch"
TARGET = "target.set"
YEARS_SHOWN = 6
FLEET_SHOWN = 200  # a subtree's caravans in the targets table; a province keeps fewer


def _year(value: str | None, default: int) -> int:
    try:
        year = int(value or default)
    except ValueError:
        raise InvalidRequest("年份不正确", field="year") from None
    if not 2000 <= year <= 2100:
        raise InvalidRequest("年份不正确", field="year")
    return year


class KpisPage(StaffPage):
    nav = "kpis"

    async def get(self) -> None:
        await self.show()

    async def show(self, error: DomainError | None = None, target_of: str = "") -> None:
        await self.require_anywhere(DISPATCH)
        choices = sorted(
            await orgs.describe(self.ctx, await access.scope(self.ctx, self.staff_id, DISPATCH)),
            key=lambda o: o.depth,
        )
        org_id = self.arg("org_id") or (choices[0].id if choices else None)
        if org_id is None:
            raise InvalidRequest("请选择组织", field="org_id")
        await self.require(DISPATCH, org_id)
        this_year = self.ctx.clock.local_now().year
        year = _year(self.arg("year"), this_year)
        k = await caravan_kpis.kpis(self.ctx, year, org_id)
        chart = {
            "names": [c.name for c in k.counties],
            "activities": [c.activities for c in k.counties],
            "pending": [c.pending.visits for c in k.counties],
            "beneficiaries": [c.beneficiaries for c in k.counties],
            "pending_beneficiaries": [c.pending.beneficiaries for c in k.counties],
            "km": [c.km for c in k.counties],
        }
        targets = {c.caravan_id: c.target for c in k.caravans if c.target}
        subtree = await orgs.subtree_ids(self.ctx, parse_id(org_id, "org_id"))
        fleet = [
            c
            for c in (await caravans.list_caravans(self.ctx, subtree, None, FLEET_SHOWN)).items
            if c.active or c.id in targets
        ]
        settable = {o: await self.may(TARGET, o) for o in {c.org_id for c in fleet}}
        self.set_status(400 if error else 200)
        self.render(
            "kpis.html",
            k=k,
            org_id=org_id,
            choices=choices,
            years=list(range(this_year, this_year - YEARS_SHOWN, -1)),
            chart=chart,
            fleet=fleet,
            targets=targets,
            settable={c.id for c in fleet if settable[c.org_id]},
            error=error,
            target_of=target_of,
            values={n: self.get_body_argument(n, "") for n in self.request.body_arguments},
            done=self.get_query_argument("done", ""),
        )


class TargetForm(KpisPage):
    """A caravan's target for the year shown; blank fields have no target, both blank remove it."""

    async def post(self, caravan_id: str) -> None:
        caravan = await caravans.get_caravan_doc(self.ctx, caravan_id)
        await self.require(TARGET, caravan["org_id"])
        values = {"year": self.arg("year"), "field_days": self.arg("field_days"),
                  "km": self.arg("km")}  # fmt: skip
        try:
            target = parse_form(
                caravans.YearTarget, {k: v for k, v in values.items() if v is not None}
            )
            await caravans.set_target(self.ctx, caravan["_id"], target, by=self.staff_id)
        except Forbidden:
            raise
        except DomainError as exc:
            await self.show(exc, caravan_id)
            return
        back = {"org_id": self.arg("org_id") or "", "year": target.year, "done": "target"}
        self.redirect(f"/console/kpis?{urlencode({k: v for k, v in back.items() if v})}#targets")


ROUTES = [
    (r"/console/kpis", KpisPage),
    (rf"/console/kpis/targets/(?P<caravan_id>{ID})", TargetForm),
]
