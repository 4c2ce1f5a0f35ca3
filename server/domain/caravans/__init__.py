"""科普大篷车: depots, caravans, the visits sites ask for, trip logs and the caravan KPIs.

Owns the `depots`, `caravans`, `visit_requests` and `trips` collections. Planning (which caravan
visits which site on which day) lives in server.domain.planning and reaches these collections
only through the functions here.

Modules:
- `fleet`: depots and caravans, and each caravan's targets for a year (field days, km);
- `visit_requests`: the visits sites ask for, and their way through a plan's publication
  (open → scheduling → scheduled), or declined or cancelled (a scheduled one's visit withdrawn,
  its activity cancelled);
- `imports`: a season's requests from a county's workbook (and its template);
- `trips`: trip logs (one caravan's duty day: odometer readings and the people reached per
  visit), the site's confirmation of each visit, which credits the crew confirmed on that
  visit's activity its duration;
- `trip_figures`: what is read off the trip logs: the facts statistics need, the visits
  awaiting confirmation, a caravan's year of trips;
- `targets`: a caravan's progress toward its year's target.
"""

from server.domain.caravans.fleet import (
    VEHICLE_TYPES,
    CaravanChange,
    CaravanOut,
    CaravanPage,
    DepotOut,
    DepotPage,
    Name,
    NewCaravan,
    NewDepot,
    Unavailable,
    VehicleTypeIn,
    YearTarget,
    caravans_by_id,
    caravans_for_plan,
    create_caravan,
    create_depot,
    depots_by_id,
    edit_caravan,
    get_caravan_doc,
    get_depot_doc,
    list_caravans,
    list_depots,
    retire_caravan,
    set_unavailable,
    targeted_caravans,
)
from server.domain.caravans.imports import Imported, import_requests
from server.domain.caravans.imports import template as request_template
from server.domain.caravans.targets import TargetProgress, get_target, set_target, target_progress
from server.domain.caravans.trip_figures import (
    TripFacts,
    WaitingVisit,
    awaiting_confirmation,
    day_start,
    parse_day,
    pending_visits,
    trip_facts,
)
from server.domain.caravans.trips import (
    MAX_DAY_KM,
    NewTrip,
    PastTrip,
    SiteVisitOut,
    SiteVisitPage,
    TripOut,
    TripPage,
    TripVisitIn,
    TripVisitOut,
    VisitConfirmed,
    confirm_visit,
    import_trips,
    list_trips,
    log_trip,
    site_visits,
)
from server.domain.caravans.visit_requests import (
    STALE_CLAIM,
    Decline,
    NewVisitRequest,
    RequestStatus,
    VisitRequestOut,
    VisitRequestPage,
    cancel,
    claim_for_publish,
    create_request,
    crew_duty_h,
    decline,
    get_request_doc,
    list_requests,
    mark_scheduled,
    open_requests,
    record_activity,
    requests_by_id,
)

__all__ = [
    "MAX_DAY_KM",
    "STALE_CLAIM",
    "VEHICLE_TYPES",
    "CaravanChange",
    "CaravanOut",
    "CaravanPage",
    "Decline",
    "DepotOut",
    "DepotPage",
    "Imported",
    "Name",
    "NewCaravan",
    "NewDepot",
    "NewTrip",
    "NewVisitRequest",
    "PastTrip",
    "RequestStatus",
    "SiteVisitOut",
    "SiteVisitPage",
    "TargetProgress",
    "TripFacts",
    "TripOut",
    "TripPage",
    "TripVisitIn",
    "TripVisitOut",
    "Unavailable",
    "VehicleTypeIn",
    "VisitConfirmed",
    "VisitRequestOut",
    "VisitRequestPage",
    "WaitingVisit",
    "YearTarget",
    "awaiting_confirmation",
    "cancel",
    "caravans_by_id",
    "caravans_for_plan",
    "claim_for_publish",
    "confirm_visit",
    "create_caravan",
    "create_depot",
    "create_request",
    "crew_duty_h",
    "day_start",
    "decline",
    "depots_by_id",
    "edit_caravan",
    "get_caravan_doc",
    "get_depot_doc",
    "get_request_doc",
    "get_target",
    "import_requests",
    "import_trips",
    "list_caravans",
    "list_depots",
    "list_requests",
    "list_trips",
    "log_trip",
    "mark_scheduled",
    "open_requests",
    "parse_day",
    "pending_visits",
    "record_activity",
    "request_template",
    "requests_by_id",
    "retire_caravan",
    "set_target",
    "set_unavailable",
    "site_visits",
    "target_progress",
    "targeted_caravans",
    "trip_facts",
]
