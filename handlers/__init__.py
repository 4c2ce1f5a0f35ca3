"""The staff HTTP API under /api/v1, plus the operational endpoints."""

from handlers import activities, hours, orgs, sites, system

ROUTES = [
    *system.ROUTES,
    *orgs.ROUTES,
    *sites.ROUTES,
    *activities.ROUTES,
    *hours.ROUTES,
]
