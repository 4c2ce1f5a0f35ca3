"""Every index of every collection, created in one place at start (create_index is idempotent)."""

from __future__ import annotations

from pymongo import ASCENDING, DESCENDING, GEOSPHERE, IndexModel

# Spelled out because SecantusDB compares it when an index is created again at the next start.
GEO_INDEX = {"2dsphereIndexVersion": 3}

INDEXES: dict[str, list[IndexModel]] = {
    "users": [
        IndexModel([("openid", ASCENDING)], unique=True),
        IndexModel([("unionid", ASCENDING)], sparse=True),
        IndexModel([("phone_hash", ASCENDING)], sparse=True),
        # The console's user search: by masked phone, by the start of a name (people.search).
        IndexModel([("phone_masked", ASCENDING)], sparse=True),
        IndexModel([("real_name", ASCENDING)], sparse=True),
        # The ID-number look-up, by its keyed hash (id_documents, on PATCH /mp/v1/me).
        IndexModel([("id_hash", ASCENDING)], sparse=True),
    ],
    "sessions": [
        IndexModel([("user_id", ASCENDING)]),
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),
    ],
    "refresh_tokens": [
        IndexModel([("user_id", ASCENDING)]),
        IndexModel([("session_id", ASCENDING)]),
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),
    ],
    "rate_limits": [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)],
    "console_logins": [
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),
        IndexModel([("session_id", ASCENDING)], sparse=True),
    ],
    "orgs": [IndexModel([("parent_id", ASCENDING)]), IndexModel([("ancestors", ASCENDING)])],
    "role_grants": [
        IndexModel(
            [
                ("user_id", ASCENDING),
                ("role", ASCENDING),
                ("org_id", ASCENDING),
                ("site_id", ASCENDING),
            ],
            unique=True,
        ),
        IndexModel([("org_id", ASCENDING)]),
        IndexModel([("site_id", ASCENDING)], sparse=True),
    ],
    "projects": [IndexModel([("org_id", ASCENDING)])],
    "activities": [
        IndexModel([("status", ASCENDING), ("starts_at", ASCENDING), ("_id", ASCENDING)]),
        IndexModel([("org_id", ASCENDING), ("starts_at", ASCENDING)]),
        IndexModel([("tags", ASCENDING)]),
        IndexModel([("location", GEOSPHERE)], **GEO_INDEX),
    ],
    "signups": [
        IndexModel([("activity_id", ASCENDING), ("user_id", ASCENDING)], unique=True),
        IndexModel([("activity_id", ASCENDING), ("status", ASCENDING), ("seq", ASCENDING)]),
        IndexModel([("user_id", ASCENDING), ("status", ASCENDING), ("starts_at", ASCENDING)]),
        IndexModel([("user_id", ASCENDING), ("_id", ASCENDING)]),
    ],
    "hours_ledger": [
        IndexModel(
            [("user_id", ASCENDING), ("activity_id", ASCENDING)],
            unique=True,
            partialFilterExpression={"kind": "credit"},
            name="one_credit_per_activity",
        ),
        IndexModel([("user_id", ASCENDING), ("status", ASCENDING)]),
        IndexModel([("ref", ASCENDING)], sparse=True),
        # A site's records page by _id under the equality prefix (site_records).
        IndexModel(
            [("site_id", ASCENDING), ("kind", ASCENDING), ("status", ASCENDING), ("_id", ASCENDING)]
        ),
        IndexModel([("org_id", ASCENDING), ("status", ASCENDING), ("kind", ASCENDING)]),
    ],
    "hours_disputes": [
        IndexModel([("record_id", ASCENDING), ("status", ASCENDING)]),
        # At most one open dispute per record, even for two raised at once.
        IndexModel(
            [("record_id", ASCENDING)],
            unique=True,
            partialFilterExpression={"status": "open"},
            name="one_open_dispute_per_record",
        ),
        # Staff lists page by _id under the scope's equality prefix; the daily reminder.
        IndexModel([("org_id", ASCENDING), ("status", ASCENDING), ("_id", ASCENDING)]),
        IndexModel([("site_id", ASCENDING), ("status", ASCENDING), ("_id", ASCENDING)]),
        IndexModel([("status", ASCENDING), ("at", ASCENDING)]),
    ],
    "hours_adjustments": [
        IndexModel([("record_id", ASCENDING)]),
        # One pending request per record (adjustments._pending); decided ones drop the field.
        IndexModel([("waiting_for", ASCENDING)], unique=True, sparse=True),
        IndexModel([("org_id", ASCENDING), ("status", ASCENDING), ("_id", ASCENDING)]),
        IndexModel([("site_id", ASCENDING), ("status", ASCENDING), ("_id", ASCENDING)]),
    ],
    "attendance": [
        IndexModel([("activity_id", ASCENDING), ("user_id", ASCENDING)], unique=True),
        IndexModel([("status", ASCENDING), ("ends_at", ASCENDING)]),
    ],
    "certificates": [IndexModel([("user_id", ASCENDING)])],
    "subscriptions": [IndexModel([("user_id", ASCENDING)])],
    "reminders": [
        IndexModel([("dedupe", ASCENDING)], unique=True),
        IndexModel([("state", ASCENDING), ("due_at", ASCENDING)]),
        IndexModel([("state", ASCENDING), ("lease_until", ASCENDING)]),
        IndexModel([("claim", ASCENDING)], sparse=True),
        IndexModel([("activity_id", ASCENDING), ("user_id", ASCENDING), ("state", ASCENDING)]),
    ],
    "sites": [
        IndexModel([("org_id", ASCENDING)]),
        IndexModel([("location", GEOSPHERE)], **GEO_INDEX),
    ],
    "idempotency": [
        IndexModel([("scope", ASCENDING), ("key", ASCENDING)], unique=True),
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),
    ],
    "geocode_cache": [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)],
    "depots": [IndexModel([("org_id", ASCENDING)])],
    "caravans": [
        IndexModel([("plate", ASCENDING)], unique=True),
        IndexModel([("org_id", ASCENDING), ("active", ASCENDING)]),
    ],
    "visit_requests": [
        IndexModel([("org_id", ASCENDING), ("status", ASCENDING), ("earliest_date", ASCENDING)]),
        IndexModel([("site_id", ASCENDING), ("status", ASCENDING)]),
        IndexModel([("activity_id", ASCENDING)]),  # a crew credit's duty day
    ],
    "trips": [
        IndexModel([("caravan_id", ASCENDING), ("date", ASCENDING)], unique=True),
        IndexModel([("org_id", ASCENDING), ("year", ASCENDING)]),
        IndexModel([("visits.request_id", ASCENDING)]),
        IndexModel([("visits.site_id", ASCENDING)]),
        IndexModel([("date", ASCENDING)]),
        IndexModel([("visits.confirmed", ASCENDING), ("year", ASCENDING)]),  # the KPIs' pending
    ],
    # The report's top tens read bands of a figure under (subtree, year): report._Stored.leaders.
    "stats_orgs": [
        IndexModel([("orgs", ASCENDING), ("year", ASCENDING), ("kind", ASCENDING)]),
        IndexModel(
            [
                ("orgs", ASCENDING),
                ("year", ASCENDING),
                ("kind", ASCENDING),
                ("totals.hours", ASCENDING),
            ]
        ),
        IndexModel(
            [
                ("orgs", ASCENDING),
                ("year", ASCENDING),
                ("kind", ASCENDING),
                ("totals.activities", ASCENDING),
            ]
        ),
    ],
    "stats_volunteers": [
        IndexModel([("org_id", ASCENDING), ("year", ASCENDING), ("hours", DESCENDING)])
    ],
    "stats_sites": [
        IndexModel([("orgs", ASCENDING), ("year", ASCENDING), ("beneficiaries", ASCENDING)])
    ],
    "stats_projects": [
        IndexModel([("orgs", ASCENDING), ("year", ASCENDING), ("activities", ASCENDING)])
    ],
    "plans": [
        IndexModel([("org_id", ASCENDING), ("created_at", ASCENDING)]),
        IndexModel([("status", ASCENDING), ("lease_until", ASCENDING)]),
    ],
    "campaigns": [
        # One campaign per caravan and day: refuses overlapping campaigns, even concurrent ones.
        IndexModel([("caravan_days", ASCENDING)], unique=True),
        IndexModel([("org_id", ASCENDING)]),
    ],
    # 百名首席科普专家进百县 (server/domain/experts/).
    "experts": [
        IndexModel([("user_id", ASCENDING)], unique=True),
        IndexModel([("active", ASCENDING)]),
        IndexModel([("fields", ASCENDING), ("_id", ASCENDING)]),
    ],
    "expert_requests": [
        IndexModel([("org_id", ASCENDING), ("status", ASCENDING), ("_id", ASCENDING)]),
        IndexModel([("status", ASCENDING), ("date", ASCENDING)]),
        IndexModel([("expert_id", ASCENDING), ("status", ASCENDING), ("date", ASCENDING)]),
        # An expert is at one visit a day, even for two matches published at once.
        IndexModel(
            [("expert_id", ASCENDING), ("date", ASCENDING)],
            unique=True,
            partialFilterExpression={"status": "scheduled"},
            name="one_visit_per_expert_day",
        ),
    ],
    # The export log pages by _id under the scope's organisations (national_records).
    "record_exports": [IndexModel([("org_id", ASCENDING), ("_id", ASCENDING)])],
}


async def ensure_indexes(db) -> None:
    for name, models in INDEXES.items():
        await db[name].create_indexes(models)
