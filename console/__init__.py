"""The staff web console under /console/: server-rendered tornado templates, htmx for partial
updates and ECharts for charts (both vendored in `static/vendor/`, see its README), signed in by
scanning a mini-program code.

Layout: `nav.py` (the sidebar: one entry per built page), `handlers/` (thin page handlers over
the same domain functions and permission table as the JSON API; each module ends with its
routes), `templates/` (`base.html` is the frame every page extends), `static/` (`console.css`,
`js/`, `vendor/`). To add a page: a handler module with its routes, a template extending
`base.html`, its entry in `nav.NAV`, and its routes below (before the catch-all 404).
"""

from console.handlers import (
    activities,
    fleet,
    home,
    hours,
    kpis,
    login,
    orgs,
    plans,
    site_map,
    sites,
    stats,
    trips,
    visit_requests,
)
from console.handlers.base import ConsoleNotFoundHandler

ROUTES = [
    *login.ROUTES,
    *home.ROUTES,
    *orgs.ROUTES,
    *site_map.ROUTES,
    *sites.ROUTES,
    *activities.ROUTES,
    *plans.ROUTES,
    *visit_requests.ROUTES,
    *fleet.ROUTES,
    *trips.ROUTES,
    *kpis.ROUTES,
    *hours.ROUTES,
    *stats.ROUTES,
    (r"/console/.*", ConsoleNotFoundHandler),
]
