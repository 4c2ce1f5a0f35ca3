"""Demo data and the operator's grant command."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from server import demo
from server.domain import access, orgs

ROOT = Path(__file__).resolve().parents[1]


def _henan_counties(prefix: str) -> int:
    with open(ROOT / "server/data/henan_adcodes.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return sum(
        1
        for r in rows
        if r["adcode"].startswith(prefix)
        and r["adcode"][4:6] != "00"
        and r["longitude"]
        and r["name"] != "市辖区"
    )


async def test_demo_data_is_a_populated_province_loaded_once(ctx):
    assert await demo.seed_demo(ctx) is True
    root = await orgs.root_org(ctx)
    assert root["name"] == "河南省科学技术协会"
    assert await ctx.db.orgs.count_documents({"kind": "city"}) == 3
    expected_counties = sum(_henan_counties(prefix) for _, prefix in demo.CITIES)
    assert await ctx.db.orgs.count_documents({"kind": "county"}) == expected_counties
    assert await ctx.db.sites.count_documents({}) == 3 * expected_counties
    assert await ctx.db.orgs.count_documents({"kind": "base"}) == 3
    assert (
        await ctx.db.activities.count_documents({"status": "published"})
        == len(demo.DEMO_ACTIVITIES) + 1
    )
    # Today's hours at the site admin's school wait for it, and one confirmed record is disputed.
    site_admin = await ctx.db.users.find_one({"openid": demo.DEMO_SITE_ADMIN_OPENID})
    [school] = await access.sites_administered(ctx, site_admin["_id"])
    pending = {"kind": "credit", "status": "pending", "site_id": school}
    assert await ctx.db.hours_ledger.count_documents(pending) == len(demo.DEMO_VOLUNTEERS) - 1
    assert await ctx.db.hours_disputes.count_documents({"status": "open", "site_id": school}) == 1
    # A city's caravans and a season of requests, ready for its dispatcher to plan.
    first_city_sites = 3 * _henan_counties(demo.CITIES[0][1])
    assert await ctx.db.caravans.count_documents({}) == demo.DEMO_CARAVANS
    assert await ctx.db.depots.count_documents({}) == 1
    assert await ctx.db.visit_requests.count_documents({"status": "open"}) == first_city_sites
    admin = await ctx.db.users.find_one({"openid": demo.DEMO_ADMIN_OPENID})
    grants = await access.roles_of(ctx, admin["_id"])
    assert access.RoleGrant(role="org_admin", org_id=str(root["_id"])) in grants
    assert await demo.seed_demo(ctx) is False
    assert await ctx.db.orgs.count_documents({"kind": "city"}) == 3


def test_grant_command(tmp_path):
    env = {"IKEPU_DATA_DIR": str(tmp_path), "IKEPU_LOG_LEVEL": "warning", "PATH": ""}

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "server", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert run("grant", "--openid", "o_op", "--role", "dispatcher", "--org", "root").returncode == 1
    assert run("seed-demo").returncode == 0
    granted = run("grant", "--openid", "o_op", "--role", "dispatcher", "--org", "root")
    assert granted.returncode == 0 and "granted" in granted.stdout
    again = run("grant", "--openid", "o_op", "--role", "dispatcher", "--org", "root")
    assert "already held" in again.stdout
    bad = run("grant", "--openid", "o_op", "--role", "emperor", "--org", "root")
    assert bad.returncode != 0
