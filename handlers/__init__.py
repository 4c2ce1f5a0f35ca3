"""The staff HTTP API under /api/v1, plus the operational endpoints."""

from handlers import orgs, sites, system

ROUTES = [*system.ROUTES, *orgs.ROUTES, *sites.ROUTES]
