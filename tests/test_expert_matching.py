"""The expert matcher alone: the same optimum as brute force on small random cases, and the
order of its aims (matched requests, then fields covered, then travel) within each expert's
free days, one request a day and the monthly limit."""

from __future__ import annotations

import random
from datetime import date, timedelta

from server.domain import expert_matching as m

ZHENGZHOU = (113.625, 34.747)
XINXIANG = (113.927, 35.304)
HUIXIAN = (113.805, 35.462)
NANYANG = (112.529, 32.991)
D1 = date(2031, 5, 6)


def expert(eid, fields, free, home=ZHENGZHOU, booked=None):
    return m.ExpertSlot(eid, frozenset(fields), frozenset(free), home, booked or {})


def request(rid, fields, dates, place=HUIXIAN):
    return m.RequestSlot(rid, frozenset(fields), frozenset(dates), place)


def _brute_force(experts, requests, limit) -> tuple[int, int, int]:
    """Every feasible assignment, searched exhaustively; the best objective."""
    options = [
        [
            (e, d, m.Assignment(r.id, e.id, d, m.fit(e, r), m.travel_m(e, r)))
            for e in experts
            if m.fit(e, r)
            for d in sorted(r.dates & e.free)
        ]
        for r in requests
    ]
    best = (0, 0, 0)

    def search(i, chosen, days, months):
        nonlocal best
        if i == len(requests):
            best = max(best, m.objective(chosen))
            return
        search(i + 1, chosen, days, months)
        for e, d, a in options[i]:
            month = (e.id, m.month_of(d))
            if (e.id, d) in days or months.get(month, 0) >= m.visits_left(e, month[1], limit):
                continue
            months[month] = months.get(month, 0) + 1
            search(i + 1, [*chosen, a], days | {(e.id, d)}, months)
            months[month] -= 1

    search(0, [], frozenset(), {})
    return best


def _feasible(matching, experts, requests, limit) -> None:
    by_id = {e.id: e for e in experts}
    wanted = {r.id: r for r in requests}
    seen_days, per_month = set(), {}
    for a in matching.assignments:
        e, r = by_id[a.expert_id], wanted[a.request_id]
        assert a.date in e.free and a.date in r.dates and m.fit(e, r) == a.fit > 0
        assert (e.id, a.date) not in seen_days
        seen_days.add((e.id, a.date))
        month = (e.id, m.month_of(a.date))
        per_month[month] = per_month.get(month, 0) + 1
        assert per_month[month] <= m.visits_left(e, month[1], limit)
    assert len({a.request_id for a in matching.assignments}) == len(matching.assignments)
    assert set(matching.unmatched) == set(wanted) - {a.request_id for a in matching.assignments}


def _random_case(rnd: random.Random):
    fields = ["农业", "医疗卫生", "应急", "信息技术"]
    # Six days across a month's end, so the monthly limit bites in both months.
    days = [date(2031, 5, 29) + timedelta(days=i) for i in range(6)]
    places = [ZHENGZHOU, XINXIANG, HUIXIAN, NANYANG, (114.3, 34.8), (112.4, 34.6)]
    experts = [
        expert(
            f"e{i}",
            rnd.sample(fields, rnd.randint(1, 2)),
            rnd.sample(days, rnd.randint(0, 4)),
            rnd.choice(places),
            {(2031, 5): rnd.randint(0, 1)} if rnd.random() < 0.3 else {},
        )
        for i in range(rnd.randint(0, 8))
    ]
    requests = [
        request(
            f"r{i}",
            rnd.sample(fields, rnd.randint(1, 2)),
            rnd.sample(days, rnd.randint(1, 2)),
            rnd.choice(places),
        )
        for i in range(rnd.randint(0, 8))
    ]
    return experts, requests, rnd.randint(1, 2)


def test_the_matcher_finds_the_brute_force_optimum():
    rnd = random.Random(18)
    for _ in range(200):
        experts, requests, limit = _random_case(rnd)
        matching = m.match(experts, requests, limit)
        _feasible(matching, experts, requests, limit)
        assert matching.objective == _brute_force(experts, requests, limit), (
            experts,
            requests,
            limit,
        )


def test_more_matched_requests_come_before_a_better_fit():
    # e1 covers both of r1's fields, but giving e1 to r1 would leave r2 without anyone.
    experts = [expert("e1", ["农业", "应急"], [D1]), expert("e2", ["农业"], [D1])]
    requests = [request("r1", ["农业", "应急"], [D1]), request("r2", ["应急"], [D1])]
    matching = m.match(experts, requests, 4)
    assert {(a.request_id, a.expert_id) for a in matching.assignments} == {
        ("r1", "e2"),
        ("r2", "e1"),
    }


def test_a_better_fit_comes_before_shorter_travel():
    near = expert("near", ["农业"], [D1], home=XINXIANG)
    far = expert("far", ["农业", "生态环境"], [D1], home=NANYANG)
    [chosen] = m.match([near, far], [request("r", ["农业", "生态环境"], [D1])], 4).assignments
    assert chosen.expert_id == "far" and chosen.fit == 2


def test_travel_decides_between_equal_fits():
    near = expert("near", ["农业"], [D1], home=XINXIANG)
    far = expert("far", ["农业"], [D1], home=NANYANG)
    [chosen] = m.match([far, near], [request("r", ["农业"], [D1])], 4).assignments
    assert chosen.expert_id == "near"
    assert 15_000 < chosen.travel_m < 40_000  # 新乡 to 辉县


def test_one_request_a_day_and_the_monthly_limit():
    d2, d3 = D1 + timedelta(days=1), D1 + timedelta(days=2)
    only = expert("e", ["医疗卫生"], [D1, d2, d3], booked={(2031, 5): 1})
    requests = [request(f"r{i}", ["医疗卫生"], [D1]) for i in range(2)]
    requests.append(request("r2", ["医疗卫生"], [d2, d3]))
    matching = m.match([only], requests, 2)  # one visit left in May
    assert len(matching.assignments) == 1
    assert set(matching.unmatched.values()) == {m.TAKEN}
    assert m.match([only], requests, 1).unmatched == {r.id: m.MONTHLY_LIMIT for r in requests}


def test_why_a_request_is_unmatched():
    experts = [expert("e", ["农业"], [D1])]
    none_in_field = request("r1", ["航空航天"], [D1])
    not_free = request("r2", ["农业"], [D1 + timedelta(days=3)])
    assert m.match(experts, [none_in_field, not_free], 4).unmatched == {
        "r1": m.NO_EXPERT_IN_FIELD,
        "r2": m.NO_FREE_EXPERT,
    }


def test_a_swap_is_checked_against_the_same_rules():
    d2 = D1 + timedelta(days=1)
    e = expert("e", ["农业"], [D1, d2])
    r1, r2 = request("r1", ["农业"], [D1, d2]), request("r2", ["农业"], [D1])
    held = [m.Assignment("r2", "e", D1, 1, 0)]
    assert m.refusal(held, e, r1, D1, 4) == m.EXPERT_BUSY
    assert m.refusal(held, e, r1, d2, 4) is None
    assert m.refusal(held, e, r1, d2, 1) == m.MONTHLY_LIMIT
    assert m.refusal(held, e, r2, D1, 1) is None  # its own assignment does not count
    assert m.refusal([], e, r2, d2, 4) == m.DATE_NOT_PREFERRED
    assert m.refusal([], expert("x", ["应急"], [D1]), r2, D1, 4) == m.FIELD_MISMATCH
    assert m.refusal([], expert("y", ["农业"], [d2]), r2, D1, 4) == m.EXPERT_UNAVAILABLE
