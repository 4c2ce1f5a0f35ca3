"""科普大篷车: depots, caravans, the visits sites ask for, trip logs and the caravan KPIs.

Owns the `depots`, `caravans`, `visit_requests` and `trips` collections. Planning (which caravan
visits which site on which day) lives in server.domain.planning and reaches these collections
only through the functions here.

Modules:
- `fleet`: depots and caravans;
- `visit_requests`: the visits sites ask for, and their way through a plan's publication
  (open → scheduling → scheduled);
- `trips`: trip logs (one caravan's duty day: odometer readings and the people reached per
  visit), the site's confirmation of each visit, which credits the crew confirmed on that
  visit's activity its duration, and the facts statistics need of the trips;
"""

from server.domain.caravans.fleet import (
    VEHICLE_TYPES,
    CaravanOut,
    CaravanPage,
    DepotOut,
    DepotPage,
    Name,
    NewCaravan,
    NewDepot,
    VehicleTypeIn,
    caravans_by_id,
    caravans_for_plan,
    create_caravan,
    create_depot,
    depots_by_id,
    get_caravan_doc,
    get_depot_doc,
    list_caravans,
    list_depots,
)
from server.domain.caravans.trips import (
    MAX_DAY_KM,
    NewTrip,
    PastTrip,
    SiteVisitOut,
    SiteVisitPage,
    TripFacts,
    TripOut,
    TripPage,
    TripVisitIn,
    TripVisitOut,
    VisitConfirmed,
    confirm_visit,
    day_start,
    import_trips,
    list_trips,
    log_trip,
    parse_day,
    site_visits,
    trip_facts,
)
from server.domain.caravans.visit_requests import (
    STALE_CLAIM,
    NewVisitRequest,
    RequestStatus,
    VisitRequestOut,
    VisitRequestPage,
    claim_for_publish,
    create_request,
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
    "CaravanOut",
    "CaravanPage",
    "DepotOut",
    "DepotPage",
    "Name",
    "NewCaravan",
    "NewDepot",
    "NewTrip",
    "NewVisitRequest",
    "PastTrip",
    "RequestStatus",
    "SiteVisitOut",
    "SiteVisitPage",
    "TripFacts",
    "TripOut",
    "TripPage",
    "TripVisitIn",
    "TripVisitOut",
    "VehicleTypeIn",
    "VisitConfirmed",
    "VisitRequestOut",
    "VisitRequestPage",
    "caravans_by_id",
    "caravans_for_plan",
    "claim_for_publish",
    "confirm_visit",
    "create_caravan",
    "create_depot",
    "create_request",
    "day_start",
    "depots_by_id",
    "get_caravan_doc",
    "get_depot_doc",
    "get_request_doc",
    "import_trips",
    "list_caravans",
    "list_depots",
    "list_requests",
    "list_trips",
    "log_trip",
    "mark_scheduled",
    "open_requests",
    "parse_day",
    "record_activity",
    "requests_by_id",
    "site_visits",
    "trip_facts",
]
