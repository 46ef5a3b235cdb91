"""Seed the local cloud through its public APIs (openstacksdk).

Two projects with a member user, flavors with and without elastic minimums,
and about twenty instances spread by the scheduler over both compute hosts:
most running, some stopped, some locked, one in error.  Seeding runs once
per state directory; a restarted cloud keeps what it had.
"""

import time
from collections.abc import Callable

import openstack
import yaml

from deploy.localcloud import layout as layout_mod
from deploy.localcloud.layout import Layout

Say = Callable[[str], None]


class SeedError(RuntimeError):
    """An instance could not be brought to its seeded state."""

# name: (vcpus, memory_mb, minimum_cpu, minimum_memory)
FLAVORS = {
    "x1.tiny": (1, 512, None, None),
    "x1.small": (2, 2048, None, None),
    "x1.elastic": (4, 4096, 1, 1024),
    "x1.elastic-large": (8, 8192, 2, 2048),
}

# (project, flavor, count, final state)
INSTANCES = (
    ("demo", "x1.elastic", 4, "active"),
    ("demo", "x1.small", 2, "active"),
    ("demo", "x1.elastic-large", 1, "active"),
    ("demo", "x1.elastic", 2, "stopped"),
    ("demo", "x1.elastic", 1, "locked"),
    ("demo", "x1.tiny", 1, "error"),
    ("research", "x1.elastic", 3, "active"),
    ("research", "x1.elastic-large", 2, "active"),
    ("research", "x1.tiny", 1, "active"),
    ("research", "x1.small", 1, "stopped"),
    ("research", "x1.elastic", 1, "locked"),
)

COMPUTE_MICROVERSION = "2.79"
# Boots in small batches: two cores and SQLite do not need 20 at once.
BOOT_BATCH = 5
# The extra specs of nova_ext.sizing (MINIMUM_CPU, MINIMUM_MEMORY); that
# module needs Nova's objects registered, which the launcher does not do.
MINIMUM_CPU = "xloud:minimum_cpu"
MINIMUM_MEMORY = "xloud:minimum_memory"


def connect(lay: Layout, username: str, password: str,
            project: str) -> openstack.connection.Connection:
    return openstack.connect(
        auth_url=lay.url("keystone"), username=username, password=password,
        project_name=project, user_domain_id="default",
        project_domain_id="default", region_name=layout_mod.REGION,
        compute_api_version=COMPUTE_MICROVERSION)


def admin_connection(lay: Layout,
                     project: str = layout_mod.ADMIN_PROJECT
                     ) -> openstack.connection.Connection:
    return connect(lay, layout_mod.ADMIN_USER, layout_mod.ADMIN_PASSWORD,
                   project)


def write_clouds_yaml(lay: Layout) -> None:
    def cloud(user: str, password: str, project: str) -> dict:
        return {"auth": {"auth_url": lay.url("keystone"),
                         "username": user, "password": password,
                         "project_name": project,
                         "user_domain_id": "default",
                         "project_domain_id": "default"},
                "region_name": layout_mod.REGION,
                "identity_api_version": 3}
    clouds = {"clouds": {
        "localcloud-admin": cloud(layout_mod.ADMIN_USER,
                                  layout_mod.ADMIN_PASSWORD,
                                  layout_mod.ADMIN_PROJECT),
        "localcloud-demo": cloud(layout_mod.MEMBER_USER,
                                 layout_mod.MEMBER_PASSWORD,
                                 layout_mod.PROJECTS[0]),
    }}
    path = lay.state / "clouds.yaml"
    path.write_text(yaml.safe_dump(clouds, sort_keys=False))
    path.chmod(0o600)


def _identity(conn: openstack.connection.Connection, say: Say) -> None:
    ident = conn.identity
    member = ident.find_role("member")
    admin_user = ident.find_user(layout_mod.ADMIN_USER, domain_id="default")
    for name in layout_mod.PROJECTS:
        project = ident.find_project(name, domain_id="default") or \
            ident.create_project(name=name, domain_id="default",
                                 description="local cloud demo project")
        # The admin boots the seeded instances inside each project (the
        # role is taken back once they are up, see seed()).
        ident.assign_project_role_to_user(project, admin_user, member)
    demo = ident.find_project(layout_mod.PROJECTS[0], domain_id="default")
    user = ident.find_user(layout_mod.MEMBER_USER, domain_id="default")
    if user is None:
        user = ident.create_user(name=layout_mod.MEMBER_USER,
                                 password=layout_mod.MEMBER_PASSWORD,
                                 domain_id="default",
                                 default_project_id=demo.id)
    ident.assign_project_role_to_user(demo, user, member)
    say(f"seed: projects {', '.join(layout_mod.PROJECTS)}; users "
        f"{layout_mod.ADMIN_USER} (admin), {layout_mod.MEMBER_USER} "
        f"(member of {demo.name})")


def _flavors(conn: openstack.connection.Connection, say: Say) -> None:
    for name, (vcpus, ram, min_cpu, min_mem) in FLAVORS.items():
        flavor = conn.compute.find_flavor(name) or conn.compute.create_flavor(
            name=name, vcpus=vcpus, ram=ram, disk=1, is_public=True)
        specs = {}
        if min_cpu:
            specs[MINIMUM_CPU] = str(min_cpu)
        if min_mem:
            specs[MINIMUM_MEMORY] = str(min_mem)
        if specs:
            conn.compute.create_flavor_extra_specs(flavor, specs)
    say("seed: flavors " + ", ".join(
        f"{n} ({v} vCPU/{r} MB"
        + (f", minimum {c}/{m}" if c else "") + ")"
        for n, (v, r, c, m) in FLAVORS.items()))


def _image_id(conn: openstack.connection.Connection) -> str:
    # Nova's image proxy API (up to microversion 2.35) answers from the
    # image service Nova is configured with: here Nova's GlanceFixture.
    resp = conn.compute.get("/images", microversion="2.35")
    resp.raise_for_status()
    return resp.json()["images"][0]["id"]


def _wait(conn: openstack.connection.Connection, ids: list[str],
          status: str, say: Say, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        servers = {s.id: s for s in conn.compute.servers(all_projects=True)}
        failed = [i for i in ids if servers[i].status == "ERROR"]
        if failed:
            raise SeedError(
                f"seeding failed: instance {failed[0]} went to ERROR: "
                f"{servers[failed[0]].fault}")
        done = sum(servers[i].status == status for i in ids)
        if done != last:
            say(f"seed: {done}/{len(ids)} instances {what}")
            last = done
        if done == len(ids):
            return
        if time.monotonic() > deadline:
            raise SeedError(f"seeding timed out: {done}/{len(ids)} "
                               f"instances {what} after {timeout:.0f} s")
        time.sleep(1)


def seed(lay: Layout, say: Say) -> None:
    write_clouds_yaml(lay)
    done = lay.state / "db" / ".done-seed"
    if done.exists():
        say("seed: already seeded (state kept from the previous run)")
        return
    admin = admin_connection(lay)
    _identity(admin, say)
    _flavors(admin, say)
    image = _image_id(admin)

    total = sum(count for _, _, count, _ in INSTANCES)
    say(f"seed: booting {total} instances, {BOOT_BATCH} at a time")
    plan = [(project, flavor_name, final)
            for project, flavor_name, count, final in INSTANCES
            for _ in range(count)]
    created: list[tuple[str, str]] = []
    connections = {p: admin_connection(lay, p) for p in layout_mod.PROJECTS}
    for start in range(0, len(plan), BOOT_BATCH):
        batch = []
        for project, flavor_name, final in plan[start:start + BOOT_BATCH]:
            conn = connections[project]
            flavor = conn.compute.find_flavor(flavor_name)
            name = (f"{project}-{flavor_name.split('.')[1]}-"
                    f"{len(created) + len(batch):02d}")
            server = conn.compute.create_server(
                name=name, image_id=image, flavor_id=flavor.id,
                networks="none")
            batch.append((server.id, final))
        _wait(admin, [sid for sid, _ in batch], "ACTIVE", say,
              f"of batch {start // BOOT_BATCH + 1} active")
        created += batch

    stopped = [sid for sid, final in created if final == "stopped"]
    for sid in stopped:
        admin.compute.stop_server(sid)
    _wait(admin, stopped, "SHUTOFF", say, "stopped")
    for sid, final in created:
        if final == "locked":
            admin.compute.lock_server(sid, locked_reason="seeded: locked")
        elif final == "error":
            # As an operator marks a broken guest (``nova reset-state``).
            admin.compute.reset_server_state(sid, "error")
    # Horizon scopes a login to the first project the user has a role in
    # (unordered): leave the admin with its own project only, so that its
    # dashboard session is always the admin project's.
    ident = admin.identity
    member = ident.find_role("member")
    admin_user = ident.find_user(layout_mod.ADMIN_USER, domain_id="default")
    for name in layout_mod.PROJECTS:
        ident.unassign_project_role_from_user(
            ident.find_project(name, domain_id="default"), admin_user, member)
    hosts: dict[str, int] = {}
    for server in admin.compute.servers(all_projects=True):
        hosts[server.compute_host] = hosts.get(server.compute_host, 0) + 1
    say("seed: instances per host: " + ", ".join(
        f"{h}={n}" for h, n in sorted(hosts.items(), key=str)))
    done.touch()
