"""指标: a year's 活动次数, 行驶里程 and 受益人次 of the caravans of an organisation's subtree,
per county and per caravan (the same `caravan_kpis.kpis` as `GET /api/v1/caravans/kpis`), the
confirmed figures beside the visits still awaiting the site's confirmation, and a bar chart.

行驶里程 counts every logged trip (the domain keeps no pending km), so it has one column."""

from __future__ import annotations

from console.handlers.staff import StaffPage
from server.domain import access, orgs
from server.domain.errors import InvalidRequest
from server.domain.stats import caravan_kpis

DISPATCH = "plan.dispatch"
YEARS_SHOWN = 6


class KpisPage(StaffPage):
    nav = "kpis"

    async def get(self) -> None:
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
        try:
            year = int(self.arg("year") or this_year)
        except ValueError:
            raise InvalidRequest("年份不正确", field="year") from None
        if not 2000 <= year <= 2100:
            raise InvalidRequest("年份不正确", field="year")
        k = await caravan_kpis.kpis(self.ctx, year, org_id)
        chart = {
            "names": [c.name for c in k.counties],
            "activities": [c.activities for c in k.counties],
            "pending": [c.pending.visits for c in k.counties],
            "beneficiaries": [c.beneficiaries for c in k.counties],
            "pending_beneficiaries": [c.pending.beneficiaries for c in k.counties],
            "km": [c.km for c in k.counties],
        }
        self.render(
            "kpis.html",
            k=k,
            org_id=org_id,
            choices=choices,
            years=list(range(this_year, this_year - YEARS_SHOWN, -1)),
            chart=chart,
        )


ROUTES = [
    (r"/console/kpis", KpisPage),
]
