"""The mini-program's HTTP API under /mp/v1."""

from miniprogram_api import auth, me

ROUTES = [*auth.ROUTES, *me.ROUTES]
