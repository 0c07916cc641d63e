"""Who may call a route and whether it is admitted, declared where the route is declared.

    @router.get("/healthz")
    @access(Access.PROBE)
    async def healthz(): ...

The middleware looks a request's route up in the app's own route table (RouteTable): its access decides
the API key and admission, and its path template ("/v2/models/{name}/infer") is the metrics label, so a
new route is labelled and protected like the others without being listed anywhere else. A route that
declares nothing is PROTECTED; a path that matches no route is labelled "other" (a bounded set of labels).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from starlette.routing import Match


class Access(enum.Enum):
    PROBE = "probe"  # no key, never shed: health and readiness probes, metrics scrapes, the page and docs
    PUBLIC = "public"  # no key, admitted like any request: V2 server metadata and model readiness
    PROTECTED = "protected"  # the API key when one is set, and admission (the default)


def access(level: Access):
    """Declare a route's access on its endpoint (put it under the router's decorator)."""
    def mark(endpoint):
        endpoint.__cae_access__ = level
        return endpoint
    return mark


def declare(routes, level: Access) -> None:
    """Declare the access of routes the app made itself (the documentation pages)."""
    for route in routes:  # kept on the route itself: a Mount has no endpoint
        route.__cae_access__ = level


@dataclass(frozen=True)
class RouteInfo:
    label: str
    access: Access


UNMATCHED = RouteInfo("other", Access.PROTECTED)


class RouteTable:
    """The app's routes, matched as the router will match them (without running anything)."""

    def __init__(self, routes: list):
        self.routes = routes
        self._info: dict[int, RouteInfo] = {}
        # (method, path) of requests that fully matched a route without path parameters: a bounded set
        # (the routes' own paths and methods), answered without matching again.
        self._static: dict[tuple[str, str], RouteInfo] = {}

    def _describe(self, route) -> RouteInfo:
        level = getattr(route, "__cae_access__", None) or getattr(getattr(route, "endpoint", None), "__cae_access__", None)
        return RouteInfo(getattr(route, "path", "other") or "other", level or Access.PROTECTED)

    def lookup(self, scope) -> RouteInfo:
        path = scope["path"]
        key = (scope.get("method", ""), path)
        if key in self._static:
            return self._static[key]
        partial = None
        for route in self.routes:
            regex = getattr(route, "path_regex", None)
            if regex is not None and not regex.match(path):
                continue  # the cheap test first: FastAPI's matches() does more than this
            match, _ = route.matches(scope)
            if match is Match.FULL:
                info = self._cached(route)
                if not getattr(route, "param_convertors", None) and not hasattr(route, "routes"):
                    self._static[key] = info
                return info
            if match is Match.PARTIAL and partial is None:
                partial = route  # the path matches, the method does not (405): same label and access
        return self._cached(partial) if partial is not None else UNMATCHED

    def _cached(self, route) -> RouteInfo:
        key = id(route)
        if key not in self._info:
            self._info[key] = self._describe(route)
        return self._info[key]
