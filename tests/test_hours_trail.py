"""Hours that can be checked: adjustments bounded by the activity (beyond it, a second staff
member approves), disputes that reach staff and come back to the volunteer, every change of a
record readable with who made it, and lists that name the volunteer and the activity."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from bson import ObjectId

from server.domain import activities, disputes, hours, identity, notifications
from tests.test_hours import Scene

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def settings_overrides():
    return {"access_token_ttl_s": 60 * 86400}


@pytest.fixture
async def scene(ctx, http, login):
    return await Scene(ctx, http).build(login)  # a 3-hour activity at the site


@pytest.fixture
def accept(ctx, http, emulator):
    """The user's taps in wx.requestSubscribeMessage: WeChat records them, the service too."""

    async def record(session, template_id: str) -> None:
        openid = await identity.openid_of(ctx, ObjectId(session.user_id))
        await emulator.post(
            "/__emulator__/subscriptions", {"openid": openid, "accepted": [template_id]}
        )
        told = await http.post(
            "/mp/v1/me/subscriptions", json={"accepted": [template_id]}, headers=session.headers
        )
        assert told.status_code == 200, told.text

    return record


async def _confirmed_credit(ctx, scene, volunteer, amount=3.0) -> str:
    record = await scene.credit(volunteer, amount)
    await hours.confirm(ctx, ObjectId(scene.site_admin.user_id), [str(record)])
    return str(record)


async def test_an_adjustment_above_the_activity_waits_for_another_staff_member(
    ctx, http, scene, login
):
    volunteer = await scene.volunteer(login, "o_trail_v1")
    record = await _confirmed_credit(ctx, scene, volunteer)
    admin, organiser = scene.site_admin.headers, scene.organiser.headers

    asked = await http.post(
        f"/api/v1/hours/{record}/adjust",
        json={"hours": 5, "reason": "实际服务五小时"},
        headers=admin,
    )
    assert asked.status_code == 409, asked.text
    assert (asked.json()["error"]["code"], asked.json()["error"]["field"]) == (
        "needs_approval",
        "hours",
    )
    assert await hours.totals(ctx, ObjectId(volunteer.user_id)) == (3.0, 0)  # nothing yet
    [request] = (await http.get("/api/v1/hours/adjustments", headers=organiser)).json()["items"]
    pending_id = request["adjustment_id"]

    own = await http.post(f"/api/v1/hours/adjustments/{pending_id}/approve", headers=admin)
    assert own.status_code == 403, own.text
    queue = await http.get("/api/v1/hours/adjustments?status=pending", headers=organiser)
    [waiting] = queue.json()["items"]
    assert (waiting["adjustment_id"], waiting["hours"], waiting["bound"]) == (pending_id, 5, 3)
    assert (waiting["volunteer_name"], waiting["activity_title"]) == ("张*", "科学实验秀")
    outsider = await http.post(
        f"/api/v1/hours/adjustments/{pending_id}/approve", headers=scene.other_admin.headers
    )
    assert outsider.status_code == 403

    approved = await http.post(f"/api/v1/hours/adjustments/{pending_id}/approve", headers=organiser)
    assert approved.status_code == 200, approved.text
    assert approved.json()["hours"] == 5
    assert await hours.totals(ctx, ObjectId(volunteer.user_id)) == (5.0, 0)
    again = await http.post(f"/api/v1/hours/adjustments/{pending_id}/approve", headers=organiser)
    assert again.status_code == 409 and again.json()["error"]["code"] == "adjustment_decided"
    assert (await http.get("/api/v1/hours/adjustments", headers=organiser)).json()["items"] == []

    within = await http.post(
        f"/api/v1/hours/{record}/adjust", json={"hours": 2.5, "reason": "提前离场"}, headers=admin
    )
    assert within.status_code == 200 and within.json()["hours"] == 2.5
    below = await http.post(
        f"/api/v1/hours/{record}/adjust", json={"hours": -1, "reason": "更正"}, headers=admin
    )
    assert below.status_code == 400 and below.json()["error"]["field"] == "hours"

    history = await http.get(f"/api/v1/hours/{record}/history", headers=organiser)
    assert history.status_code == 200, history.text
    steps = [(s["action"], s["actor_id"], s["hours"]) for s in history.json()["items"]]
    admin_id, organiser_id = scene.site_admin.user_id, scene.organiser.user_id
    assert steps == [
        ("created", None, 3),
        ("confirmed", admin_id, None),
        ("adjustment_requested", admin_id, 5),
        ("adjustment_approved", organiser_id, 5),
        ("adjusted", admin_id, 5),
        ("adjusted", admin_id, 2.5),
    ]
    reasons = {s["action"]: s["reason"] for s in history.json()["items"]}
    assert reasons["adjustment_requested"] == "实际服务五小时"
    mine = await http.get(f"/mp/v1/me/hours/{record}/history", headers=volunteer.headers)
    assert mine.json() == history.json()
    other = await scene.volunteer(login, "o_trail_nosy")
    nosy = await http.get(f"/mp/v1/me/hours/{record}/history", headers=other.headers)
    assert nosy.status_code == 404
    elsewhere = await http.get(f"/api/v1/hours/{record}/history", headers=scene.other_admin.headers)
    assert elsewhere.status_code == 403


async def test_a_rejected_adjustment_leaves_the_record(ctx, http, scene, login):
    volunteer = await scene.volunteer(login, "o_trail_v2")
    record = await _confirmed_credit(ctx, scene, volunteer)
    asked = await http.post(
        f"/api/v1/hours/{record}/adjust",
        json={"hours": 8, "reason": "加班"},
        headers=scene.site_admin.headers,
    )
    assert asked.json()["error"]["code"] == "needs_approval"
    queue = await http.get("/api/v1/hours/adjustments", headers=scene.organiser.headers)
    [request] = queue.json()["items"]
    pending_id = request["adjustment_id"]
    rejected = await http.post(
        f"/api/v1/hours/adjustments/{pending_id}/reject",
        json={"reason": "超出活动时长"},
        headers=scene.organiser.headers,
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    assert await hours.totals(ctx, ObjectId(volunteer.user_id)) == (3.0, 0)


async def test_an_upheld_dispute_corrects_the_record_and_tells_the_volunteer(
    ctx, http, scene, login, emulator, accept
):
    volunteer = await scene.volunteer(login, "o_trail_v3")
    await accept(volunteer, "tmpl_dispute_resolved")
    record = await _confirmed_credit(ctx, scene, volunteer, 2.0)
    raised = await http.post(
        f"/mp/v1/hours/{record}/dispute",
        json={"reason": "我待满了三小时"},
        headers=volunteer.headers,
    )
    assert raised.status_code == 201, raised.text

    listing = await http.get("/api/v1/hours/disputes?status=open", headers=scene.site_admin.headers)
    [open_one] = listing.json()["items"]
    assert (open_one["record_id"], open_one["reason"]) == (record, "我待满了三小时")
    assert (open_one["volunteer_name"], open_one["activity_title"]) == ("张*", "科学实验秀")
    elsewhere = await http.get("/api/v1/hours/disputes", headers=scene.other_admin.headers)
    assert elsewhere.json()["items"] == []

    resolved = await http.post(
        f"/api/v1/hours/disputes/{open_one['dispute_id']}/resolve",
        json={"outcome": "upheld", "hours": 3, "reason": "核对签到记录属实"},
        headers=scene.site_admin.headers,
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "resolved" and resolved.json()["outcome"] == "upheld"
    twice = await http.post(
        f"/api/v1/hours/disputes/{open_one['dispute_id']}/resolve",
        json={"outcome": "rejected", "reason": "重复处理"},
        headers=scene.organiser.headers,
    )
    assert twice.status_code == 409
    assert await hours.totals(ctx, ObjectId(volunteer.user_id)) == (3.0, 0)
    assert (await http.get("/api/v1/hours/disputes", headers=scene.site_admin.headers)).json()[
        "items"
    ] == []

    await notifications.dispatch_due(ctx)
    [message] = emulator.messages("o_trail_v3")
    assert message["template_id"] == "tmpl_dispute_resolved"
    assert message["data"]["phrase2"]["value"] == "已采纳"
    mine = (await http.get("/mp/v1/me/hours", headers=volunteer.headers)).json()
    [shown] = mine["records"]
    assert (shown["hours"], shown["activity_title"]) == (3, "科学实验秀")
    assert shown["dispute"]["status"] == "resolved" and shown["dispute"]["outcome"] == "upheld"
    history = await http.get(f"/mp/v1/me/hours/{record}/history", headers=volunteer.headers)
    actions = [(s["action"], s["actor_id"]) for s in history.json()["items"]]
    assert ("disputed", volunteer.user_id) in actions
    assert ("resolved", scene.site_admin.user_id) in actions
    assert ("adjusted", scene.site_admin.user_id) in actions


async def test_an_upheld_dispute_above_the_bound_waits_for_approval(ctx, http, scene, login):
    volunteer = await scene.volunteer(login, "o_trail_v4")
    record = await _confirmed_credit(ctx, scene, volunteer)
    await disputes.raise_dispute(ctx, ObjectId(volunteer.user_id), record, "还有准备时间")
    [dispute] = (await disputes.list_disputes(
        ctx, org_ids=[scene.county], site_ids=[], status="open", cursor=None
    )).items  # fmt: skip
    resolved = await http.post(
        f"/api/v1/hours/disputes/{dispute.dispute_id}/resolve",
        json={"outcome": "upheld", "hours": 4, "reason": "含布展时间"},
        headers=scene.site_admin.headers,
    )
    assert resolved.status_code == 200, resolved.text
    pending_id = resolved.json()["adjustment_id"]
    assert pending_id and await hours.totals(ctx, ObjectId(volunteer.user_id)) == (3.0, 0)
    approved = await http.post(
        f"/api/v1/hours/adjustments/{pending_id}/approve", headers=scene.organiser.headers
    )
    assert approved.status_code == 200 and approved.json()["hours"] == 4


async def test_a_rejected_dispute_shows_its_reason_in_my_hours(ctx, http, scene, login):
    volunteer = await scene.volunteer(login, "o_trail_v5")
    record = await _confirmed_credit(ctx, scene, volunteer)
    await http.post(
        f"/mp/v1/hours/{record}/dispute", json={"reason": "时长偏少"}, headers=volunteer.headers
    )
    [dispute] = (await http.get("/api/v1/hours/disputes", headers=scene.organiser.headers)).json()[
        "items"
    ]
    no_hours = await http.post(
        f"/api/v1/hours/disputes/{dispute['dispute_id']}/resolve",
        json={"outcome": "upheld", "reason": "属实"},
        headers=scene.organiser.headers,
    )
    assert no_hours.status_code == 400 and no_hours.json()["error"]["field"] == "hours"
    rejected = await http.post(
        f"/api/v1/hours/disputes/{dispute['dispute_id']}/resolve",
        json={"outcome": "rejected", "reason": "签退记录显示提前离场"},
        headers=scene.organiser.headers,
    )
    assert rejected.status_code == 200, rejected.text
    [shown] = (await http.get("/mp/v1/me/hours", headers=volunteer.headers)).json()["records"]
    assert shown["hours"] == 3
    assert shown["dispute"] == {
        "dispute_id": dispute["dispute_id"],
        "status": "resolved",
        "outcome": "rejected",
        "reason": "签退记录显示提前离场",
    }
    again = await http.post(
        f"/mp/v1/hours/{record}/dispute", json={"reason": "仍有异议"}, headers=volunteer.headers
    )
    assert again.status_code == 201  # a resolved dispute leaves room for a new one


async def test_two_disputes_at_once_open_one(ctx, http, scene, login):
    volunteer = await scene.volunteer(login, "o_trail_v6")
    record = await _confirmed_credit(ctx, scene, volunteer)
    answers = await asyncio.gather(
        *(
            http.post(
                f"/mp/v1/hours/{record}/dispute",
                json={"reason": f"异议{n}"},
                headers=volunteer.headers,
            )
            for n in range(8)
        )
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] + [409] * 7, [a.text for a in answers]
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 409} == {"dispute_open"}
    assert await ctx.db.hours_disputes.count_documents({"record_id": ObjectId(record)}) == 1


async def test_an_unanswered_dispute_is_reminded_to_the_organiser_once(
    ctx, http, scene, login, emulator, accept
):
    await accept(scene.organiser, "tmpl_dispute_overdue")
    volunteer = await scene.volunteer(login, "o_trail_v7")
    record = await _confirmed_credit(ctx, scene, volunteer)
    await http.post(
        f"/mp/v1/hours/{record}/dispute", json={"reason": "时长偏少"}, headers=volunteer.headers
    )
    assert await disputes.remind_overdue(ctx) == 0
    ctx.clock.advance((disputes.OVERDUE_AFTER + timedelta(hours=1)).total_seconds())
    assert await disputes.remind_overdue(ctx) == 1
    assert await disputes.remind_overdue(ctx) == 0
    await notifications.dispatch_due(ctx)
    [message] = emulator.messages("o_organiser")
    assert message["template_id"] == "tmpl_dispute_overdue"
    assert message["data"]["thing1"]["value"] == "科学实验秀"


async def test_hours_lists_name_the_volunteer_and_the_activity(ctx, http, scene, login):
    volunteers = [await scene.volunteer(login, f"o_trail_n{n}", name) for n, name in
                  enumerate(["李四", "欧阳娜娜"])]  # fmt: skip
    for v in volunteers:
        await scene.credit(v, 2)
    listing = await http.get(f"/api/v1/sites/{scene.site}/hours", headers=scene.site_admin.headers)
    shown = {(i["volunteer_name"], i["activity_title"]) for i in listing.json()["items"]}
    assert shown == {("李*", "科学实验秀"), ("欧***", "科学实验秀")}
    [mine] = (await http.get("/mp/v1/me/hours", headers=volunteers[0].headers)).json()["records"]
    assert mine["activity_title"] == "科学实验秀" and mine["volunteer_name"] is None
    assert await activities.titles(ctx, [scene.activity]) == {scene.activity: "科学实验秀"}


async def test_asking_the_same_adjustment_again_is_the_same_request(ctx, http, scene, login):
    volunteer = await scene.volunteer(login, "o_trail_v5")
    record = await _confirmed_credit(ctx, scene, volunteer)
    path = f"/api/v1/hours/{record}/adjust"
    ask = {"hours": 8, "reason": "加班"}
    # A clerk on a weak signal taps again and again while the first call is under way.
    answers = await asyncio.gather(
        *(http.post(path, json=ask, headers=scene.site_admin.headers) for _ in range(8))
    )
    assert {(a.status_code, a.json()["error"]["code"]) for a in answers} == {
        (409, "needs_approval")
    }
    queue = await http.get("/api/v1/hours/adjustments", headers=scene.organiser.headers)
    [request] = queue.json()["items"]
    assert (request["hours"], request["status"]) == (8, "pending")

    other = await http.post(
        path, json={"hours": 9, "reason": "另算一小时"}, headers=scene.site_admin.headers
    )
    assert other.status_code == 409 and other.json()["error"]["code"] == "adjustment_pending"
    assert "8 小时" in other.json()["error"]["message"]
    assert len((await http.get("/api/v1/hours/adjustments", headers=scene.organiser.headers))
               .json()["items"]) == 1  # fmt: skip

    rejected = await http.post(
        f"/api/v1/hours/adjustments/{request['adjustment_id']}/reject",
        json={"reason": "超出活动时长"},
        headers=scene.organiser.headers,
    )
    assert rejected.status_code == 200, rejected.text
    again = await http.post(
        path, json={"hours": 9, "reason": "另算一小时"}, headers=scene.site_admin.headers
    )
    assert again.json()["error"]["code"] == "needs_approval"
    every = (await http.get("/api/v1/hours/adjustments", headers=scene.organiser.headers)).json()
    assert sorted((r["hours"], r["status"]) for r in every["items"]) == [(9, "pending")]
    assert await hours.totals(ctx, ObjectId(volunteer.user_id)) == (3.0, 0)
