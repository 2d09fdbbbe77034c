"""Free text a site sends is bounded; ListSites and ListVersions page, and the admin client follows pages."""

from __future__ import annotations

import grpc
import pytest

from aggregator_service import admin_handlers
from aggregator_service.admin_client import AdminClient
from fedmedclip.rpc.v1 import admin_pb2, common_pb2, federation_pb2
from tests.aggregator.helpers import ADMIN_TOKEN, AdminStub, SiteClient, bearer, make_update, rpc_error, run_config


def _join(site: SiteClient, **info: str) -> federation_pb2.JoinResponse:
    request = federation_pb2.JoinRequest(
        protocol_major=1, protocol_minor=0, software_version="t", site_info=common_pb2.SiteInfo(**info)
    )
    return site.stub.Join(request, metadata=bearer(site.token), timeout=10)


def test_oversized_or_control_character_site_info_is_refused_and_not_stored(
    admin: AdminStub, enrol: object, channel: grpc.Channel
) -> None:
    site = enrol("site-a")  # type: ignore[operator]
    huge = rpc_error(lambda: _join(site, platform="x" * (3 << 20)))  # the 3 MiB platform of the abuse run
    assert huge.code() == grpc.StatusCode.INVALID_ARGUMENT and "site_info.platform" in (huge.details() or "")
    long = rpc_error(lambda: _join(site, platform="x" * 300))
    assert long.code() == grpc.StatusCode.INVALID_ARGUMENT and "platform" in (long.details() or "")
    ansi = rpc_error(lambda: _join(site, device="cpu\x1b[2J"))
    assert ansi.code() == grpc.StatusCode.INVALID_ARGUMENT and "control characters" in (ansi.details() or "")
    _join(site, platform="Linux-6.1-x86_64", device="cpu")
    (stored,) = admin("ListSites", admin_pb2.ListSitesRequest()).sites
    assert stored.site_info.platform == "Linux-6.1-x86_64"


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"loss\n": 0.5}, "metric name"),
        ({"x" * 65: 0.5}, "metric name"),
        ({"loss": 1e300}, "must be finite and at most"),
    ],
)
def test_metric_names_and_values_are_bounded(
    admin: AdminStub, enrol: object, metrics: dict[str, float], message: str
) -> None:
    site = enrol("site-a")  # type: ignore[operator]
    run_id = admin.start(run_config())
    error = rpc_error(lambda: site.submit(run_id, 1, 1, make_update(1), metrics=metrics))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and message in (error.details() or "")


def test_list_sites_pages_and_the_admin_client_follows_them(
    admin: AdminStub, enrol: object, channel: grpc.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"site-{i:02d}" for i in range(25)]
    for name in names:
        enrol(name)  # type: ignore[operator]
    first = admin("ListSites", admin_pb2.ListSitesRequest(page_size=10))
    second = admin("ListSites", admin_pb2.ListSitesRequest(page_size=10, page_token=first.next_page_token))
    third = admin("ListSites", admin_pb2.ListSitesRequest(page_size=10, page_token=second.next_page_token))
    assert [s.name for s in (*first.sites, *second.sites, *third.sites)] == names
    assert first.next_page_token and second.next_page_token and third.next_page_token == ""
    monkeypatch.setattr(admin_handlers, "SITES_PAGE", (4, 4))  # the server's page: the client must follow
    assert [s.name for s in AdminClient(channel, ADMIN_TOKEN).list_sites()] == names


def test_list_versions_pages_and_a_forged_token_is_invalid(
    admin: AdminStub, enrol: object, channel: grpc.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = enrol("site-a")  # type: ignore[operator]
    run_id = admin.start(run_config(rounds=3, min_sites=1))
    for round_number in (1, 2):
        base = site.poll(run_id).train.fam_version
        assert site.submit(run_id, round_number, base, make_update(round_number)).accepted
        closed = round_number  # one round closed per pass

        def round_closed(status: admin_pb2.RunStatus, number: int = closed) -> bool:
            return bool(status.rounds[number - 1].state == admin_pb2.ROUND_STATE_CLOSED)

        admin.wait_for(round_closed, run_id)
    every = [v.version for v in admin.versions(run_id)]
    assert len(every) == 3
    monkeypatch.setattr(admin_handlers, "VERSIONS_PAGE", (1, 1))
    page = admin("ListVersions", admin_pb2.ListVersionsRequest(run_id=run_id))
    assert [v.version for v in page.versions] == every[:1] and page.next_page_token
    assert [v.version for v in AdminClient(channel, ADMIN_TOKEN).list_versions(run_id)] == every
    forged = rpc_error(lambda: admin("ListVersions", admin_pb2.ListVersionsRequest(run_id=run_id, page_token="x")))
    assert forged.code() == grpc.StatusCode.INVALID_ARGUMENT
