"""The staff HTTP API under /api/v1, plus the operational endpoints."""

from handlers import activities, orgs, sites, system

ROUTES = [*system.ROUTES, *orgs.ROUTES, *sites.ROUTES, *activities.ROUTES]
