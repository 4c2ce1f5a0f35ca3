"""The mini-program's HTTP API under /mp/v1."""

from miniprogram_api import activities, auth, console_login, hours, me, sites, subscriptions

ROUTES = [
    *auth.ROUTES,
    *me.ROUTES,
    *activities.ROUTES,
    *hours.ROUTES,
    *sites.ROUTES,
    *subscriptions.ROUTES,
    *console_login.ROUTES,
]
