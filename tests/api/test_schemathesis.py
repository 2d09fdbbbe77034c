"""Property-based testing of the OpenAPI document: no generated request may cause a server error.

Hypothesis drives schemathesis' strategies directly (bounded examples per operation) rather than through
schemathesis' pytest plugin, whose lazy-fixture loader does not work with the pytest this project uses.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from inference_api.app import create_app
from tests.api.conftest import KEYS

MAX_EXAMPLES = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(api_settings, tiny_backbone):
    app = create_app(api_settings, backbone=tiny_backbone)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()  # schemathesis keeps the app's lifespan running until told to stop


def test_no_server_error(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 6
    statuses: dict[int, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy(), real_site=st.booleans(), with_key=st.booleans())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        def check(case, real_site: bool, with_key: bool) -> None:
            # Half the cases target a real site with a valid key, so generated uploads reach the decoders.
            if real_site and case.path_parameters and "site" in case.path_parameters:
                case.path_parameters["site"] = "site-a"
            if with_key:  # set on the case: generated security headers would win over call-time ones
                case.headers = {**(case.headers or {}), "X-API-Key": KEYS["all"]}
            response = case.call()
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            # Documented statuses, bodies and content types too; "valid data accepted" cannot hold, since
            # a schema-valid binary string is rarely a decodable image.
            case.validate_response(response, checks=CHECKS)

        check()
    # The generated requests went past authentication into the decoders (415/422), not only to 401/404.
    assert statuses.get(401) and statuses.get(404) and (statuses.get(415) or statuses.get(422)), statuses
