"""Editing an activity in the console: a draft's times move, a published one's are locked, and a
refusal shows the API's message beside its field."""

from __future__ import annotations

from datetime import timedelta

from server.domain import access, activities, identity, orgs


async def test_an_organiser_edits_an_activity_in_the_console(ctx, new_page, sign_in, shot):
    root = await orgs.create_org(ctx, "测试省科学技术协会", "province", None)
    [admin] = await identity.import_users(ctx, [("t_edit_admin", "省管理员")])
    await access.grant_role(ctx, admin, "org_admin", root)
    start = ctx.clock.now() + timedelta(days=5)
    activity = await activities.create_activity(
        ctx,
        activities.NewActivity(
            title="天文科普夜",
            description="观星",
            org_id=str(root),
            starts_at=start,
            ends_at=start + timedelta(hours=2),
            capacity=30,
        ),
        created_by=None,
    )
    page = await sign_in(await new_page(), "t_edit_admin")

    await page.goto(f"/console/activities/{activity}/edit")
    await page.fill("#e-ends", (start - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    await page.click("#activity-edit-form button[type=submit]")
    error = page.locator('[data-field="ends_at"]')
    assert await error.inner_text() == "结束时间须晚于开始时间"
    await shot(page, "activity-edit-refused")

    await page.goto(f"/console/activities/{activity}/edit")
    await page.fill("#e-title", "天文科普夜（加场）")
    await page.fill("#e-tags", "天文，青少年")
    await page.click("#activity-edit-form button[type=submit]")
    await page.wait_for_url(f"**/console/activities/{activity}?done=edited")
    saved = await activities.get_activity(ctx, activity)
    assert (saved.title, saved.tags) == ("天文科普夜（加场）", ["天文", "青少年"])

    await activities.publish(ctx, activity, publisher_openid="t_edit_admin")
    await page.goto(f"/console/activities/{activity}/edit")
    assert await page.locator("#e-starts").is_disabled()
    await page.fill("#e-description", "观星与讲解")
    await page.click("#activity-edit-form button[type=submit]")
    await page.wait_for_url(f"**/console/activities/{activity}?done=edited")
    after = await activities.get_activity(ctx, activity)
    assert (after.description, after.starts_at) == ("观星与讲解", saved.starts_at)
    await shot(page, "activity-edited")
