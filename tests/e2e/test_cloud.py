"""The local cloud itself: real services, real wiring, seeded as promised.

These hold with or without this project's pieces installed; they prove
that what the other end-to-end tests run against is a real OpenStack.
"""

import urllib.request

from deploy.localcloud import seed


def test_keystone_issues_fernet_tokens(admin_conn):
    token = admin_conn.session.get_token()
    # Fernet tokens are url-safe base64 of a version 0x80 payload.
    assert token.startswith("gAAAAA"), token[:10]
    catalog = {s["type"] for s in admin_conn.session.auth.get_access(
        admin_conn.session).service_catalog.catalog}
    assert {"identity", "compute", "placement", "image"} <= catalog


def test_nova_services_and_libvirt_hypervisors(cloud, admin_conn):
    services = {(s.binary, s.host, s.state)
                for s in admin_conn.compute.services()}
    binaries = {binary for binary, _, _ in services}
    assert {"nova-conductor", "nova-scheduler", "nova-compute"} <= binaries
    computes = sorted(host for binary, host, state in services
                      if binary == "nova-compute" and state == "up")
    assert computes == sorted(cloud["compute_hosts"])
    hypervisors = list(admin_conn.compute.hypervisors(details=True))
    assert sorted(h.name for h in hypervisors) == computes
    # Nova's libvirt driver reports the hypervisor type from libvirt.
    assert {h.hypervisor_type for h in hypervisors} == {"QEMU"}


def test_placement_tracks_both_hosts(cloud, admin_conn):
    resp = admin_conn.placement.get("/resource_providers")
    resp.raise_for_status()
    names = sorted(rp["name"] for rp in resp.json()["resource_providers"])
    assert names == sorted(cloud["compute_hosts"])


def test_seeded_instances_flavors_and_projects(cloud, admin_conn):
    projects = {p.name for p in admin_conn.identity.projects()}
    assert set(cloud["projects"]) <= projects
    flavors = {f.name: f for f in admin_conn.compute.flavors()}
    assert set(seed.FLAVORS) <= set(flavors)
    elastic = admin_conn.compute.fetch_flavor_extra_specs(
        flavors["x1.elastic"])
    assert elastic.extra_specs[seed.MINIMUM_CPU] == "1"
    plain = admin_conn.compute.fetch_flavor_extra_specs(flavors["x1.small"])
    assert seed.MINIMUM_CPU not in (plain.extra_specs or {})

    servers = list(admin_conn.compute.servers(all_projects=True))
    seeded = [s for s in servers
              if s.name.split("-")[0] in cloud["projects"]]
    assert len(seeded) >= sum(n for _, _, n, _ in seed.INSTANCES)
    statuses = {s.status for s in seeded}
    assert {"ACTIVE", "SHUTOFF", "ERROR"} <= statuses
    assert any(s.is_locked for s in seeded)
    hosts = {s.compute_host for s in seeded}
    assert set(cloud["compute_hosts"]) <= hosts


def test_member_sees_only_own_project(cloud, member_conn):
    servers = list(member_conn.compute.servers())
    assert servers
    assert {s.project_id for s in servers} == {member_conn.current_project_id}


def test_dashboard_login_page_served(cloud):
    with urllib.request.urlopen(cloud["dashboard_url"] + "auth/login/",
                                timeout=60) as resp:
        page = resp.read().decode()
    assert resp.status == 200
    assert 'name="username"' in page
