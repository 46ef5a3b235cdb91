"""Elastic sizing through the API alone (openstacksdk and curl).

For automation users: everything the dashboard does, through Nova's own
endpoint on the running local cloud, including the ``curl`` call of the
deployment guide verbatim apart from the host and the token.
"""

import json
import shutil
import subprocess
from urllib.parse import urlsplit

import pytest

from tests.e2e import helpers


def test_index_reports_current_and_max(admin_conn, elastic_driver):
    entries = helpers.sizes(admin_conn, all_tenants=1)
    servers = list(admin_conn.compute.servers(all_projects=True))
    assert {e["id"] for e in entries} == {s.id for s in servers}
    elastic = [e for e in entries if e["flavor"]["name"] == "x1.elastic"
               and e["status"] == "ACTIVE"]
    assert elastic
    for entry in elastic:
        assert entry["max_vcpus"] == 4 and entry["max_memory_mb"] == 4096
        assert entry["min_vcpus"] == 1 and entry["min_memory_mb"] == 1024
        assert 1 <= entry["current_vcpus"] <= 4
        assert entry["host"] in ("compute1", "compute2")


def test_adjust_updates_size_and_history(admin_conn, elastic_driver):
    entry = helpers.take(admin_conn, flavor="x1.elastic")
    vcpus, memory_mb = helpers.other_size(entry, (2, 2048), (3, 3072))
    resp = helpers.adjust(admin_conn, entry["id"], current_vcpus=vcpus,
                          current_memory_mb=memory_mb, persist=True)
    assert resp.status_code == 202, resp.text
    adjustment = resp.json()["adjustment"]
    assert adjustment["action"] == helpers.ACTION
    done = helpers.wait_for_action(admin_conn, entry["id"],
                                   adjustment["request_id"])
    assert done["event"]["result"] == "Success", done
    live = helpers.size(admin_conn, entry["id"])
    assert (live["current_vcpus"], live["current_memory_mb"]) == (
        vcpus, memory_mb)
    assert live["adjustment"]["status"] == "success"
    assert helpers.action_count(admin_conn, entry["id"]) >= 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_deployment_guide_curl_verbatim(cloud, admin_conn, elastic_driver):
    entry = helpers.take(admin_conn, flavor="x1.elastic")
    nova = urlsplit(cloud["compute_url"])
    token = admin_conn.session.get_token()
    server_id = entry["id"]
    # The call of the deployment guide (seed 000), host and token replaced.
    command = (
        f'curl -X POST http://{nova.netloc}/v2.1/os-xloud-adjust/'
        f'{server_id} \\\n'
        f'  -H "X-Auth-Token: {token}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        '  -d \'{"current_vcpus": 3, "current_memory_mb": 3072, '
        '"persist": true}\''
    )
    out = subprocess.run(["bash", "-c", command + " -s -w '\\n%{http_code}'"],
                         capture_output=True, text=True, timeout=60,
                         check=True).stdout
    body, status = out.rsplit("\n", 1)
    assert status == "202", out
    request_id = json.loads(body)["adjustment"]["request_id"]
    done = helpers.wait_for_action(admin_conn, server_id, request_id)
    assert done["event"]["result"] == "Success", done
    live = helpers.size(admin_conn, server_id)
    assert (live["current_vcpus"], live["current_memory_mb"]) == (3, 3072)


def test_above_flavor_maximum_refused_and_nothing_changes(
        admin_conn, elastic_driver):
    entry = helpers.take(admin_conn, flavor="x1.elastic")
    before = helpers.size(admin_conn, entry["id"])
    actions_before = helpers.action_count(admin_conn, entry["id"])
    resp = helpers.adjust(admin_conn, entry["id"], current_vcpus=5)
    assert resp.status_code == 400, resp.text
    after = helpers.size(admin_conn, entry["id"])
    assert after["current_vcpus"] == before["current_vcpus"]
    assert helpers.action_count(admin_conn, entry["id"]) == actions_before


def test_locked_instance_refused(admin_conn, api_extension):
    entry = helpers.pick_server(admin_conn, flavor="x1.elastic",
                                locked=True)
    resp = helpers.adjust(admin_conn, entry["id"], current_vcpus=2)
    assert resp.status_code == 409, resp.text


def test_member_is_refused(admin_conn, member_conn, api_extension):
    own = next(iter(member_conn.compute.servers()))
    resp = helpers.adjust(member_conn, own.id, current_vcpus=2)
    assert resp.status_code == 403, resp.text
    resp = member_conn.compute.get(helpers.ADJUST,
                                   params={"all_tenants": 1})
    assert resp.status_code == 403, resp.text


def test_flavor_minimum_edit_and_boot_at_minimum(admin_conn, elastic_driver):
    flavor = admin_conn.compute.create_flavor(
        name="x1.e2e-api", vcpus=4, ram=4096, disk=1)
    try:
        resp = admin_conn.compute.post(
            f"/flavors/{flavor.id}/os-extra_specs",
            json={"extra_specs": {"xloud:minimum_cpu": "8"}})
        assert resp.status_code == 400, resp.text
        admin_conn.compute.create_flavor_extra_specs(
            flavor, {"xloud:minimum_cpu": "2", "xloud:minimum_memory": "2048"})
        image = admin_conn.compute.get(
            "/images", microversion="2.35").json()["images"][0]["id"]
        server = admin_conn.compute.create_server(
            name="e2e-api-minimum", image_id=image, flavor_id=flavor.id,
            networks="none")
        try:
            helpers.wait_for_status(admin_conn, server.id, "ACTIVE")
            live = helpers.size(admin_conn, server.id)
            assert (live["current_vcpus"], live["current_memory_mb"]) == (
                2, 2048)
            assert (live["max_vcpus"], live["max_memory_mb"]) == (4, 4096)
        finally:
            admin_conn.compute.delete_server(server.id)
            admin_conn.compute.wait_for_delete(server, wait=120)
    finally:
        admin_conn.compute.delete_flavor(flavor.id)


def test_a_new_flavor_minimum_reaches_existing_instances(admin_conn,
                                                         elastic_driver):
    """Which minimum governs an existing instance: its embedded flavor,
    until the flavor's new minimum is applied to it."""
    flavor = admin_conn.compute.create_flavor(
        name="x1.e2e-raise", vcpus=4, ram=4096, disk=1)
    path = f"/os-xloud-flavor-minimums/{flavor.id}"
    try:
        admin_conn.compute.create_flavor_extra_specs(
            flavor, {"xloud:minimum_cpu": "1",
                     "xloud:minimum_memory": "1024"})
        image = admin_conn.compute.get(
            "/images", microversion="2.35").json()["images"][0]["id"]
        server = admin_conn.compute.create_server(
            name="e2e-raise", image_id=image, flavor_id=flavor.id,
            networks="none")
        try:
            helpers.wait_for_status(admin_conn, server.id, "ACTIVE")
            assert helpers.size(admin_conn, server.id)["min_vcpus"] == 1

            admin_conn.compute.update_flavor_extra_specs_property(
                flavor, "xloud:minimum_cpu", "2")
            report = admin_conn.compute.get(path).json()["flavor_minimums"]
            assert (report["instances"], report["stale"]) == (1, 1), report
            # The instance is still governed by the copy it booted with.
            assert helpers.size(admin_conn, server.id)["min_vcpus"] == 1

            resp = admin_conn.compute.post(f"{path}/action",
                                           json={"apply": {}})
            assert resp.status_code == 200, resp.text
            applied = resp.json()["flavor_minimums"]
            assert (applied["updated"], applied["stale"]) == (1, 0), applied
            assert helpers.size(admin_conn, server.id)["min_vcpus"] == 2
            refused = helpers.adjust(admin_conn, server.id,
                                     current_vcpus=1)
            assert refused.status_code == 400, refused.text
            assert "xloud:minimum_cpu 2" in refused.text
        finally:
            admin_conn.compute.delete_server(server)
            admin_conn.compute.wait_for_delete(server, wait=120)
    finally:
        admin_conn.compute.delete_flavor(flavor)
