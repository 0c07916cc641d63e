"""Property-based requests generated from the OpenAPI schema (schemathesis): no input gives a 5xx."""

import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis")

from fastapi.testclient import TestClient  # noqa: E402

from service.main import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served_app(model_dir):
    app = create_app(Settings(model_dir=model_dir))
    with TestClient(app):  # runs the lifespan: models loaded
        yield app


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(scope="module")
def api_schema(served_app):
    return schemathesis.openapi.from_asgi("/openapi.json", served_app)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gives_a_server_error(case):
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        # The service's errors carry a message; under /v2 the error is the message (the protocol's form).
        assert error if case.formatted_path.startswith("/v2") and isinstance(error, str) else error["message"]
