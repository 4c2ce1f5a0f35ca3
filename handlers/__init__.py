"""The staff HTTP API under /api/v1, plus the operational endpoints."""

from handlers import activities, caravans, hours, orgs, reminders, sites, stats, system

ROUTES = [
    *system.ROUTES,
    *orgs.ROUTES,
    *sites.ROUTES,
    *activities.ROUTES,
    *hours.ROUTES,
    *reminders.ROUTES,
    *caravans.ROUTES,
    *stats.ROUTES,
]
