"""Nova's own lifecycle operations on an adjusted server, through the API.

Each test boots a small server of its own on compute1 (a flavor of this
module, elastic: 4 vCPUs / 4096 MB at most, booting at 1 / 1024), adjusts
it to 3 vCPUs / 3072 MB with ``persist``, runs one of Nova's operations on
it with openstacksdk and checks that it ends in the state Nova documents
for it with its elastic size kept in all three places that hold it: the
extension's record, the guest's domain (live and persistent, read from the
fake hypervisor's saved domains) and the server's allocation in placement.
Fake mode only: ``test_real_hypervisor.py`` does the same on real QEMU.

A resize starts over from the new flavor's minimum (``nova_ext.sizing``),
and its revert returns to the adjusted size of the old flavor.
"""

import contextlib
import time
import uuid
from pathlib import Path

import openstack.exceptions
import pytest
from lxml import etree

from deploy.localcloud import hypervisor, seed
from tests.e2e import helpers

# Cold migration to a named host.
MIGRATE_MICROVERSION = "2.56"
TIMEOUT = 120
# Seconds between two looks at a server's status.
POLL = 0.5
SOURCE, DESTINATION = "compute1", "compute2"
# (name, vcpus, memory_mb, minimum_cpu, minimum_memory)
FLAVOR = ("x1.e2e-lifecycle", 4, 4096, 1, 1024)
LARGER_FLAVOR = ("x1.e2e-lifecycle-larger", 6, 6144, 2, 2048)
ADJUSTED = (3, 3072)


def _flavor(conn, name, vcpus, memory_mb, minimum_cpu, minimum_memory):
    flavor = conn.compute.find_flavor(name)
    if flavor is None:
        flavor = conn.compute.create_flavor(name=name, vcpus=vcpus,
                                            ram=memory_mb, disk=1)
        conn.compute.create_flavor_extra_specs(flavor, {
            seed.MINIMUM_CPU: str(minimum_cpu),
            seed.MINIMUM_MEMORY: str(minimum_memory)})
    return flavor


@pytest.fixture(scope="module")
def fake_cloud(cloud):
    if cloud["hypervisor"] != "fake":
        pytest.skip("reads the fake hypervisor's saved domains; on real "
                    "QEMU, test_real_hypervisor.py covers the lifecycle")
    return cloud


@pytest.fixture(scope="module")
def flavors(fake_cloud, admin_conn, elastic_driver):
    made = [_flavor(admin_conn, *FLAVOR), _flavor(admin_conn, *LARGER_FLAVOR)]
    yield made
    for flavor in made:
        admin_conn.compute.delete_flavor(flavor, ignore_missing=True)


class Lifecycle:
    """One test's server: boot, operations, and where its size is kept."""

    def __init__(self, cloud: dict, conn, flavors) -> None:
        self.cloud = cloud
        self.conn = conn
        self.flavor, self.larger_flavor = flavors
        self.server = None

    def boot(self, name: str) -> None:
        image = self.conn.image.find_image(seed.GUEST_IMAGE,
                                           ignore_missing=False)
        self.server = self.conn.compute.create_server(
            name=f"{name}-{uuid.uuid4().hex[:6]}", image_id=image.id,
            flavor_id=self.flavor.id, networks="none",
            availability_zone=f"nova:{SOURCE}")
        self.wait_for("ACTIVE")
        self.assert_size(SOURCE, (FLAVOR[3], FLAVOR[4]))
        resp = helpers.adjust(self.conn, self.server.id,
                              current_vcpus=ADJUSTED[0],
                              current_memory_mb=ADJUSTED[1], persist=True)
        assert resp.status_code == 202, resp.text
        done = helpers.wait_for_action(
            self.conn, self.server.id, resp.json()["adjustment"]["request_id"])
        assert done["event"]["result"] == "Success", done
        self.assert_size(SOURCE, ADJUSTED)

    @property
    def shelved_image_name(self) -> str:
        # What Nova names the snapshot a shelve uploads.
        return f"{self.server.name}-shelved"

    def shelved_images(self) -> list:
        return list(self.conn.image.images(name=self.shelved_image_name))

    def delete(self) -> None:
        if self.server is None:
            return
        with contextlib.suppress(openstack.exceptions.NotFoundException):
            self.conn.compute.delete_server(self.server)
            self.conn.compute.wait_for_delete(self.server, interval=POLL,
                                              wait=TIMEOUT)
        # A shelve that failed leaves its snapshot behind.
        for image in self.shelved_images():
            self.conn.image.delete_image(image)

    def wait_for(self, status: str):
        try:
            self.server = self.conn.compute.wait_for_server(
                self.conn.compute.get_server(self.server.id), status=status,
                failures=["ERROR"], interval=POLL, wait=TIMEOUT)
        except openstack.exceptions.ResourceFailure:
            fault = self.conn.compute.get_server(self.server.id).fault
            raise AssertionError(
                f"server {self.server.name} went to ERROR waiting for "
                f"{status}: {fault}") from None
        # The status changes before the task ends; the next operation
        # needs it ended.
        deadline = time.monotonic() + TIMEOUT
        while self.server.task_state is not None:
            assert time.monotonic() < deadline, self.server
            time.sleep(POLL)
            self.server = self.conn.compute.get_server(self.server.id)
        return self.server

    def confirm_move(self, size: tuple[int, int]) -> None:
        """A resize or migration waiting on DESTINATION, confirmed: the
        server runs there at ``size`` and SOURCE holds nothing of it."""
        server = self.wait_for("VERIFY_RESIZE")
        assert server.compute_host == DESTINATION
        self.conn.compute.confirm_server_resize(server)
        self.wait_for("ACTIVE")
        self.assert_size(DESTINATION, size)
        assert self.server.id not in self.domains(SOURCE)

    def suspend(self) -> None:
        self.conn.compute.suspend_server(self.server)
        self.wait_for("SUSPENDED")

    def domains(self, host: str) -> dict[str, dict]:
        return hypervisor.saved_domains(
            Path(self.cloud["hypervisor_state"]) / f"{host}.json")

    def allocations(self) -> dict[str, dict]:
        return helpers.allocations(self.conn, self.server.id)

    def seen(self, host: str) -> dict:
        """The size in the record, the domain and placement, as they are."""
        record = helpers.size(self.conn, self.server.id)
        seen = {"host": record["host"],
                "record": (record["current_vcpus"],
                           record["current_memory_mb"]),
                "boot": (record["boot_vcpus"], record["boot_memory_mb"])}
        allocations = self.allocations()
        resources = allocations.get(helpers.provider(self.conn, host), {})
        seen["placement"] = (resources.get("VCPU"),
                             resources.get("MEMORY_MB"))
        seen["providers"] = len(allocations)
        domain = self.domains(host).get(self.server.id)
        seen["domain"] = domain and (domain["state"], domain["vcpus"],
                                     domain["memory_mb"])
        seen["definition"] = domain and _definition_size(domain["xml"])
        return seen

    def assert_size(self, host: str, size: tuple[int, int]) -> None:
        """The server runs on ``host`` at ``size``, everywhere it is kept.

        Polled: after a (re)start the extension settles the allocation and
        confirms the memory in the background.
        """
        expected = {"host": host, "record": size, "boot": size,
                    "placement": size, "providers": 1,
                    "domain": (hypervisor.RUNNING, *size),
                    "definition": size}
        deadline = time.monotonic() + TIMEOUT / 4
        while (seen := self.seen(host)) != expected:
            assert time.monotonic() < deadline, (seen, expected)
            time.sleep(POLL)

    def assert_gone(self) -> None:
        """No host holds the server: no allocation, no domain.

        Polled: Nova deletes the allocation after the server is gone.
        """
        deadline = time.monotonic() + TIMEOUT / 4
        while (allocations := self.allocations()) != {}:
            assert time.monotonic() < deadline, allocations
            time.sleep(POLL)
        for host in (SOURCE, DESTINATION):
            assert self.server.id not in self.domains(host), host


def _definition_size(xml: str) -> tuple[int, int]:
    """The (vCPUs, memory MiB) a persistent definition boots with."""
    tree = etree.fromstring(xml)
    vcpu = tree.find("vcpu")
    memory_kib = int(tree.findtext("currentMemory"))
    return int(vcpu.get("current", vcpu.text)), (memory_kib + 512) // 1024


@pytest.fixture
def lifecycle(request, fake_cloud, admin_conn, flavors):
    run = Lifecycle(fake_cloud, admin_conn, flavors)
    try:
        run.boot(f"e2e-{request.node.name.removeprefix('test_')[:24]}")
        yield run
    finally:
        run.delete()


@pytest.mark.parametrize("reboot_type", ["HARD", "SOFT"])
def test_reboot_keeps_the_size(lifecycle, reboot_type):
    lifecycle.conn.compute.reboot_server(lifecycle.server, reboot_type)
    lifecycle.wait_for("ACTIVE")
    lifecycle.assert_size(SOURCE, ADJUSTED)


def test_stop_and_start_keep_the_size(lifecycle):
    conn = lifecycle.conn
    conn.compute.stop_server(lifecycle.server)
    lifecycle.wait_for("SHUTOFF")
    conn.compute.start_server(lifecycle.server)
    lifecycle.wait_for("ACTIVE")
    lifecycle.assert_size(SOURCE, ADJUSTED)


def test_shelve_and_unshelve_keep_the_size(lifecycle):
    conn = lifecycle.conn
    conn.compute.shelve_server(lifecycle.server)
    lifecycle.wait_for("SHELVED_OFFLOADED")
    lifecycle.assert_gone()
    assert len(lifecycle.shelved_images()) == 1
    conn.compute.unshelve_server(lifecycle.server)
    server = lifecycle.wait_for("ACTIVE")
    lifecycle.assert_size(server.compute_host, ADJUSTED)
    # Unshelved, the server no longer needs its snapshot.
    assert lifecycle.shelved_images() == []


def test_resize_confirmed_starts_from_the_new_minimum(lifecycle):
    lifecycle.conn.compute.resize_server(lifecycle.server,
                                         lifecycle.larger_flavor)
    lifecycle.confirm_move((LARGER_FLAVOR[3], LARGER_FLAVOR[4]))


def test_resize_reverted_returns_to_the_adjusted_size(lifecycle):
    conn = lifecycle.conn
    conn.compute.resize_server(lifecycle.server, lifecycle.larger_flavor)
    server = lifecycle.wait_for("VERIFY_RESIZE")
    conn.compute.revert_server_resize(server)
    server = lifecycle.wait_for("ACTIVE")
    assert server.flavor.name == FLAVOR[0]
    lifecycle.assert_size(SOURCE, ADJUSTED)
    assert lifecycle.server.id not in lifecycle.domains(DESTINATION)


def test_cold_migration_to_the_other_host_keeps_the_size(lifecycle):
    conn = lifecycle.conn
    resp = conn.compute.post(
        f"/servers/{lifecycle.server.id}/action",
        json={"migrate": {"host": DESTINATION}},
        microversion=MIGRATE_MICROVERSION)
    openstack.exceptions.raise_from_response(resp)
    lifecycle.confirm_move(ADJUSTED)


def test_suspend_and_resume_keep_the_size(lifecycle):
    lifecycle.suspend()
    # As libvirt keeps it: shut off, with its managed save image.
    domain = lifecycle.domains(SOURCE)[lifecycle.server.id]
    assert (domain["state"], domain["managed_save"]) == (
        hypervisor.SHUTOFF, True), domain
    lifecycle.conn.compute.resume_server(lifecycle.server)
    lifecycle.wait_for("ACTIVE")
    lifecycle.assert_size(SOURCE, ADJUSTED)


def test_a_suspended_server_is_deleted(lifecycle):
    conn = lifecycle.conn
    lifecycle.suspend()
    resp = conn.compute.delete(f"/servers/{lifecycle.server.id}")
    assert resp.status_code == 204, resp.text
    conn.compute.wait_for_delete(lifecycle.server, interval=POLL,
                                 wait=TIMEOUT)
    lifecycle.assert_gone()
