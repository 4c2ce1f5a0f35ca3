"""The 站点 map in a real browser: every site of the caller's scope as a point over Henan's county
outlines (no tile server), filtered by kind, a county admin's map zoomed onto their county, the
cap on points, and the map module's API the caravan plan page draws its routes with."""

from __future__ import annotations

import pytest

from console.handlers import site_map
from server import geo
from server.domain import access, identity, orgs, sites

ADMIN, COUNTY_ADMIN = "t_province_admin", "t_county_admin"

# The points the map's chart holds, by series, as the page drew them.
CHART_POINTS = """el => {
  const option = echarts.getInstanceByDom(el).getOption();
  return option.series.filter(s => s.id.startsWith("points:"))
    .map(s => [s.id, s.data.length, s.data.map(d => d.value)]);
}"""


class World:
    """Henan's 158 counties under their cities, a school at each county seat and a village
    centre beside every tenth (中原区, the first, among them); a county admin of 中原区."""

    async def build(self, ctx) -> World:
        self.root = await orgs.create_org(ctx, "河南省科学技术协会", "province", None)
        cities: dict = {}
        self.schools = self.villages = 0
        self.seats, self.school_names = [], []
        for n, county in enumerate(geo.counties_of("41")):
            city_code = county["city_adcode"] or county["adcode"]
            if city_code not in cities:
                city = geo.adcode_lookup(city_code)
                cities[city_code] = await orgs.create_org(
                    ctx, f"{city['name']}科协", "city", self.root
                )
            org = await orgs.create_org(ctx, f"{county['name']}科协", "county", cities[city_code])
            if county["name"] == "中原区":
                self.county, self.county_seat = org, (county["lng"], county["lat"])
            await self._site(ctx, org, f"{county['name']}第一小学", "school", county, 0)
            self.schools += 1
            self.seats.append((county["lng"], county["lat"]))
            self.school_names.append(f"{county['name']}第一小学")
            if n % 10 == 0:
                name = f"{county['name']}村综合文化服务中心"
                await self._site(ctx, org, name, "village", county, 0.02)
                self.villages += 1
        self.admin = await identity.ensure_user(ctx, ADMIN)
        self.county_admin = await identity.ensure_user(ctx, COUNTY_ADMIN)
        await access.grant_role(ctx, self.admin, "org_admin", self.root)
        await access.grant_role(ctx, self.county_admin, "org_admin", self.county)
        return self

    @staticmethod
    async def _site(ctx, org, name, kind, county, offset) -> None:
        await sites.create_site(
            ctx,
            sites.NewSite(
                name=name,
                kind=kind,
                org_id=str(org),
                location=sites.LocationIn(lng=county["lng"] + offset, lat=county["lat"]),
            ),
        )


@pytest.fixture
async def world(ctx):
    return await World().build(ctx)


async def open_map(page, path: str = "/console/sites/map"):
    response = await page.goto(path)
    assert response.status == 200
    await page.locator("#site-map[data-drawn] canvas").first.wait_for()
    return page.locator("#site-map")


async def shown_count(page) -> int:
    return int(await page.locator('[data-count="points"]').inner_text())


async def test_the_province_admin_sees_every_site_on_the_county_outlines(
    world, new_page, sign_in, shot
):
    page = await new_page()
    await sign_in(page, ADMIN)
    await page.goto("/console/sites")
    await page.locator("a.tab", has_text="地图").click()
    await page.wait_for_url("**/console/sites/map")
    chart = await open_map(page, page.url)
    assert await page.locator(".sidebar a.active").inner_text() == "站点"
    total = world.schools + world.villages
    assert await shown_count(page) == total == 158 + 16

    drawn = await chart.evaluate(CHART_POINTS)
    assert {s[0]: s[1] for s in drawn} == {
        "points:school": world.schools,
        "points:village": world.villages,
    }
    school_points = {tuple(v) for v in drawn[0][2]}
    assert school_points == set(world.seats)
    regions = await chart.evaluate(
        "el => echarts.getInstanceByDom(el).getModel().getComponent('geo').coordinateSystem"
        ".regions.length"
    )
    assert regions == 158

    # The tooltip of a point (one with no village beside it): name, kind, organisation.
    await chart.evaluate(
        "el => echarts.getInstanceByDom(el).dispatchAction("
        "{type: 'showTip', seriesIndex: 0, dataIndex: 5})"
    )
    tip = page.locator("#site-map div", has_text=world.school_names[5]).last
    await tip.wait_for()
    assert (await tip.inner_text()).split("\n") == [
        world.school_names[5],
        "学校",
        world.school_names[5].removesuffix("第一小学") + "科协",
    ]
    await shot(page, "site-map-province")

    # Filtered by kind: the village centres alone.
    await page.locator('select[name="kind"]').select_option("village")
    await page.locator("button", has_text="筛选").click()
    await page.wait_for_url("**/console/sites/map?kind=village")
    chart = await open_map(page, page.url)
    assert await shown_count(page) == world.villages
    assert [s[0] for s in await chart.evaluate(CHART_POINTS)] == ["points:village"]


async def test_a_county_admin_sees_their_county_zoomed_in(world, new_page, sign_in, shot):
    page = await new_page()
    await sign_in(page, COUNTY_ADMIN)
    chart = await open_map(page)
    assert await shown_count(page) == 2
    lng, lat = world.county_seat
    assert await chart.evaluate(CHART_POINTS) == [
        ["points:school", 1, [[lng, lat]]],
        ["points:village", 1, [[lng + 0.02, lat]]],
    ]
    view = await chart.evaluate(
        "el => { const g = echarts.getInstanceByDom(el).getOption().geo[0];"
        " return [g.zoom, g.center]; }"
    )
    assert view[0] > 2
    assert view[1] == pytest.approx([lng + 0.01, lat])
    await shot(page, "site-map-county")


async def test_the_map_stops_at_its_cap_and_says_so(world, new_page, sign_in, monkeypatch):
    monkeypatch.setattr(site_map, "MAX_POINTS", 60)
    monkeypatch.setattr(site_map, "PAGE_SIZE", 25)  # so the cap falls across pages
    page = await new_page()
    await sign_in(page, ADMIN)
    await open_map(page)
    assert await shown_count(page) == 60
    assert "只显示前 60 个" in await page.locator(".alert-warn").inner_text()
    await open_map(page, "/console/sites/map?kind=village")
    assert await shown_count(page) == world.villages
    assert await page.locator(".alert-warn").count() == 0


async def test_the_map_module_draws_routes_and_marked_points(world, new_page, sign_in, shot):
    """What the caravan plan page will do: a coloured line per caravan-day, marked points."""
    page = await new_page()
    await sign_in(page, ADMIN)
    await open_map(page, "/console/sites/map?kind=school")
    seats = world.seats
    series = await page.evaluate(
        """async ([a, b, c]) => {
          const view = await ikepuMap.ready("site-map");
          view.addRoute({id: "r1", name: "1号车 6月3日", color: "#cf222e", coords: [a, b, c]});
          view.addRoute({id: "r2", name: "2号车 6月3日", color: "#8250df", coords: [c, a]});
          view.addRoute({id: "r2", name: "2号车 6月3日", color: "#8250df", coords: [c, b]});
          view.addMarks({id: "unassigned", name: "未安排", color: "#9a6700", legend: true,
                         points: [{name: "某小学", lng: b[0], lat: b[1], note: "超出车程"}]});
          const drawn = () => view.chart.getOption().series.filter(Boolean).map(s => s.id);
          const before = [view.seriesIds(), drawn()];
          view.remove("r1");
          return [before, [view.seriesIds(), drawn()], view.chart.getOption().legend[0].data];
        }""",
        [list(seats[0]), list(seats[60]), list(seats[120])],
    )
    before, after, legend = series
    assert before == [["points:school", "route:r1", "route:r2", "marks:unassigned"]] * 2
    assert after == [["points:school", "route:r2", "marks:unassigned"]] * 2
    assert legend == ["学校", "未安排"]
    await shot(page, "site-map-routes")


async def test_a_hidden_map_survives_a_resize_and_draws_when_shown(world, new_page, sign_in):
    """ECharts 6.1.0 throws on every frame of a geo chart resized to no height or no width
    (apache/echarts#21706): a map folded away (a collapsed card, a tab, an element swapped out)
    must wait, not break the page, and take its size again when shown. The page's own error
    check is the assertion, with the chart's size after."""
    page = await new_page()
    await sign_in(page, COUNTY_ADMIN)
    chart = await open_map(page)
    await chart.evaluate("el => { el.style.height = '0px'; }")
    await page.set_viewport_size({"width": 1100, "height": 800})
    await page.evaluate("() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 300)))")
    await chart.evaluate("el => { el.style.height = ''; }")
    await page.set_viewport_size({"width": 1280, "height": 860})
    await page.evaluate("() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 300)))")
    size = await chart.evaluate(
        "el => { const c = echarts.getInstanceByDom(el);"
        " return [c.getWidth(), c.getHeight(), el.clientWidth, el.clientHeight]; }"
    )
    assert size[:2] == size[2:] and size[1] == 640
    assert await chart.evaluate(CHART_POINTS) != []
