"""The mini-program's HTTP API under /mp/v1."""

from miniprogram_api import activities, auth, hours, me, subscriptions

ROUTES = [
    *auth.ROUTES,
    *me.ROUTES,
    *activities.ROUTES,
    *hours.ROUTES,
    *subscriptions.ROUTES,
]
