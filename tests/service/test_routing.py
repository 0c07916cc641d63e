"""Routes declare their access; metrics label requests with the route's template; the docs work offline."""

from fastapi import APIRouter

from service.routing import Access, RouteInfo, RouteTable, access


def _scope(path, method="GET"):
    return {"type": "http", "path": path, "method": method, "root_path": "", "headers": []}


def test_a_route_that_declares_nothing_is_protected_and_labelled_by_its_template():
    router = APIRouter(prefix="/v9")

    @router.post("/things/{thing_id}/poke")
    async def poke(thing_id: str):
        return {}

    @router.get("/alive")
    @access(Access.PROBE)
    async def alive():
        return {}

    table = RouteTable(router.routes)
    assert table.lookup(_scope("/v9/things/42/poke", "POST")) == RouteInfo("/v9/things/{thing_id}/poke", Access.PROTECTED)
    assert table.lookup(_scope("/v9/things/42/poke", "GET")).label == "/v9/things/{thing_id}/poke"  # 405, same route
    assert table.lookup(_scope("/v9/alive")).access is Access.PROBE
    assert table.lookup(_scope("/elsewhere")) == RouteInfo("other", Access.PROTECTED)


def _requests(client) -> dict[tuple[str, str], float]:
    return {(s.labels["route"], s.labels["status"]): s.value for m in client.app.state.runtime.metrics.registry.collect()
            if m.name == "cae_requests" for s in m.samples if s.name == "cae_requests_total"}


def test_access_and_labels_on_the_real_app(make_client):
    client = make_client(api_key="k")
    assert client.get("/v1/models").status_code == 401  # protected
    assert client.get("/v2").status_code == 200 and client.get("/v2/models/encoder/ready").status_code == 200  # public
    assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200  # probes
    assert client.get("/no/such/path").status_code == 401  # unknown paths are protected too
    z = client.post("/v2/models/encoder/infer", headers={"authorization": "Bearer k"},
                    json={"inputs": [{"name": "image", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": [0.5] * 48}]})
    assert z.status_code == 200
    counts = _requests(client)
    assert counts[("/v2/models/{name}/infer", "200")] == 1 and counts[("/v2/models/{name}/ready", "200")] == 1
    assert counts[("/v1/models", "401")] == 1 and counts[("other", "401")] == 1


def test_docs_load_their_assets_from_the_service(make_client):
    client = make_client(api_key="k")
    page = client.get("/docs")
    assert page.status_code == 200 and "cdn" not in page.text.lower()
    assert "/static-offline-docs/swagger-ui-bundle.js" in page.text and "/static-offline-docs/swagger-ui.css" in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert client.get(f"/static-offline-docs/{asset}").status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "cae"
    assert client.get("/redoc").status_code == 200


def test_the_lookup_cache_stays_bounded():
    router = APIRouter()

    @router.get("/fixed")
    async def fixed():
        return {}

    @router.get("/items/{item}")
    async def item(item: str):
        return {}

    table = RouteTable(router.routes)
    for i in range(200):
        table.lookup(_scope(f"/items/{i}"))
        table.lookup(_scope(f"/unknown/{i}"))
        table.lookup(_scope("/fixed", method=f"M{i}"))  # wrong methods: 405, never cached
        assert table.lookup(_scope("/fixed")).label == "/fixed"
    assert len(table._static) == 1
