"""百名首席科普专家进百县: chief science experts sent to counties on request.

Owns the `experts` (registry), `expert_requests` (expert_requests) and `expert_matches`
(matches; publishing moves a match to published) collections.

An expert is a volunteer the association registered with their fields (from `FIELDS`, the one
vocabulary), a home city (an organisation of kind city; travel is measured from its seat in the
gazetteer) and the dates they are free. A county's staff post expert requests: fields, the dates
they prefer, the audience and the place. The association proposes a match of the open requests
of a period (`server.domain.expert_matching`, an exact min-cost flow, run in the executor),
swaps experts where it knows better (each swap checked against the same rules), and publishes:
each visit becomes a published activity of the county and its expert is sent a subscribe
message.

Modules:
- `registry`: the field vocabulary, registering experts, their free dates;
- `expert_requests`: the counties' requests, and taking them for a visit;
- `matches`: proposals and swaps;
- `publishing`: visits made activities, experts told.
"""

from server.domain.experts.expert_requests import (
    ExpertRequestOut,
    ExpertRequestPage,
    NewExpertRequest,
    RequestStatus,
    create_request,
    list_requests,
)
from server.domain.experts.matches import MatchOut, NewMatch, Swap, get_match, propose, swap
from server.domain.experts.publishing import EXPERT_TAG, publish
from server.domain.experts.registry import (
    FIELDS,
    ExpertOut,
    ExpertPage,
    Field,
    FreeDates,
    NewExpert,
    expert_of_user,
    get_expert,
    list_experts,
    register_expert,
    set_free_dates,
    set_my_free_dates,
)

__all__ = [
    "EXPERT_TAG",
    "FIELDS",
    "ExpertOut",
    "ExpertPage",
    "ExpertRequestOut",
    "ExpertRequestPage",
    "Field",
    "FreeDates",
    "MatchOut",
    "NewExpert",
    "NewExpertRequest",
    "NewMatch",
    "RequestStatus",
    "Swap",
    "create_request",
    "expert_of_user",
    "get_expert",
    "get_match",
    "list_experts",
    "list_requests",
    "propose",
    "publish",
    "register_expert",
    "set_free_dates",
    "set_my_free_dates",
    "swap",
]
