"""Nothing stays stuck: a compute host that crashes or hangs mid-adjustment.

Runs on a cloud of its own in the MariaDB/RabbitMQ mode (``mariadb_cloud``):
every nova-compute is a process of its own, with its RPC over the broker,
which the launcher's control socket kills with SIGKILL, starts again (same
configuration and state directory), pauses with SIGSTOP and resumes.  A
compute host's fake hypervisor is saved after every change, so a killed
nova-compute finds its guests on restart as QEMU would have kept them; the
tests read the size a guest runs at from that saved state, not from Nova.

* A compute killed while an adjustment waits for a guest without a balloon
  driver (image ``hypervisor.WITHOUT_BALLOON_DRIVER_IMAGE``) ends that
  adjustment when it starts again: its event is an Error naming the
  restart, the server is free again (task_state None, ACTIVE), and the
  record and the placement allocation are the size the guest runs at.
* A compute that does not answer (paused: servicegroup still reports it up)
  gets no adjustment: the API answers 503 after ``[xloud] accept_timeout``
  and nothing changed; once the host resumes it drops the late message.
"""

import configparser
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import openstack
import openstack.exceptions
import pytest

from deploy.localcloud import control, hypervisor, layout
from tests.e2e import helpers

RESTARTED = "restarted while the adjustment was in progress"
API_EVENT = "api_xloud_adjust"
# Instance action events show their details from this microversion on.
EVENT_DETAILS_MICROVERSION = "2.84"
FLAVOR = ("x1.crash", 4, 4096, {"xloud:minimum_cpu": "1",
                                "xloud:minimum_memory": "1024"})
BOOT_TIMEOUT = 180
SETTLE_TIMEOUT = 60
# From the POST to the compute asking libvirt for the new balloon target.
IN_FLIGHT_TIMEOUT = 30
# From the compute's restart to the end of the adjustment it found.
RECONCILE_TIMEOUT = 60
# How long after the host resumed a late adjustment would have shown.
LATE_MESSAGE_GRACE = 5


class CrashCloud:
    """The crash tests' cloud: its API, its control socket, its domains."""

    def __init__(self, info: dict) -> None:
        self.info = info
        admin = info["admin"]
        self.conn = openstack.connect(
            auth_url=info["auth_url"], username=admin["username"],
            password=admin["password"], project_name=admin["project"],
            user_domain_id="default", project_domain_id="default",
            region_name=info["region"])
        self.state = Path(info["state_dir"])
        self.socket = Path(info["control_socket"])
        self.hypervisors = Path(info["hypervisor_state"])
        nova_conf = configparser.ConfigParser(interpolation=None)
        nova_conf.read(self.state / "etc" / "nova" / "nova.conf")
        self.accept_timeout = nova_conf.getint("xloud", "accept_timeout")

    def control(self, action: str, host: str) -> dict:
        return control.request(self.socket, action, f"nova-{host}")

    def domain(self, host: str, server_id: str) -> dict:
        """The guest as the host's hypervisor holds it now."""
        domains = hypervisor.saved_domains(self.hypervisors / f"{host}.json")
        assert server_id in domains, (
            f"no domain of server {server_id} on {host}: "
            f"{sorted(domains)}")
        return domains[server_id]

    def provider(self, host: str) -> str:
        return helpers.provider(self.conn, host)

    def allocations(self, server_id: str) -> dict[str, dict]:
        return helpers.allocations(self.conn, server_id)

    def recorded(self, server_id: str) -> dict:
        """The recorded size (the index never asks the host)."""
        for entry in helpers.sizes(self.conn, all_tenants=1):
            if entry["id"] == server_id:
                assert entry["source"] == "recorded", entry
                return entry
        raise AssertionError(f"server {server_id} is not in the index")

    def server(self, server_id: str):
        return self.conn.compute.get_server(server_id)

    def action(self, server_id: str, request_id: str) -> dict:
        resp = self.conn.compute.get(
            f"/servers/{server_id}/os-instance-actions/{request_id}",
            microversion=EVENT_DETAILS_MICROVERSION)
        openstack.exceptions.raise_from_response(resp)
        return resp.json()["instanceAction"]

    def event(self, server_id: str, request_id: str,
              name: str) -> dict | None:
        events = [e for e in self.action(server_id, request_id)["events"]
                  if e["event"] == name]
        return events[-1] if events else None

    def boot(self, flavor, name: str, image: str | None = None):
        if image is None:
            resp = self.conn.compute.get("/images", microversion="2.35")
            openstack.exceptions.raise_from_response(resp)
            image = resp.json()["images"][0]["id"]
        server = self.conn.compute.create_server(
            name=name, image_id=image, flavor_id=flavor.id,
            networks="none")
        try:
            return self.conn.compute.wait_for_server(
                server, status="ACTIVE", failures=["ERROR"],
                wait=BOOT_TIMEOUT)
        except openstack.exceptions.ResourceFailure:
            raise AssertionError(
                f"server {name} went to ERROR: "
                f"{self.server(server.id).fault}") from None

    def settled(self, server_id: str, host: str) -> dict:
        """Wait until record and allocation agree with the running guest.

        Returns the guest's domain.  What happens after a boot (the record,
        the allocation, the balloon reaching the boot memory) is then
        done, and any later change is the test's.
        """
        provider = self.provider(host)

        def agree():
            domain = self.domain(host, server_id)
            recorded = self.recorded(server_id)
            resources = self.allocations(server_id).get(provider, {})
            seen = {"domain": (domain["state"], domain["vcpus"],
                               domain["memory_mb"]),
                    "recorded": (recorded["current_vcpus"],
                                 recorded["current_memory_mb"]),
                    "allocation": (resources.get("VCPU"),
                                   resources.get("MEMORY_MB"))}
            size = (domain["vcpus"], domain["memory_mb"])
            if (domain["state"] == hypervisor.RUNNING
                    and seen["recorded"] == size
                    and seen["allocation"] == size):
                return domain
            return None, seen

        return _wait_for(f"server {server_id}'s record and allocation to "
                         f"match its guest on {host}", agree,
                         SETTLE_TIMEOUT)


def _wait_for(what: str, check, timeout: float, interval: float = 0.5):
    """Poll ``check`` until it returns a value that is not ``(None, seen)``.

    ``check`` returns what the caller waits for, or ``(None, seen)`` with
    what it saw, which the failure message shows.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not (isinstance(result, tuple) and result[0] is None):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}; last "
                                 f"seen: {result[1]}")
        time.sleep(interval)


def _sizes(domain: dict, recorded: dict, resources: dict) -> dict:
    return {"domain": (domain["vcpus"], domain["memory_mb"]),
            "recorded": (recorded["current_vcpus"],
                         recorded["current_memory_mb"]),
            "allocation": (resources.get("VCPU"),
                           resources.get("MEMORY_MB"))}


KILLED_HOST = '''
import json, os, signal, sys
from pathlib import Path
os.environ["OS_NOVA_DISABLE_EVENTLET_PATCHING"] = "1"
from nova import monkey_patch
monkey_patch.patch(backend="threading")
from nova.tests.fixtures import libvirt as fakelibvirt
from tests.nova import fakelibvirt as elastic
from deploy.localcloud import hypervisor

elastic.ElasticLibvirtFixture().setUp()
state, phase = Path(sys.argv[1]), sys.argv[2]
UUID = "11111111-2222-3333-4444-555555555555"
LIVE = fakelibvirt.VIR_DOMAIN_AFFECT_LIVE
host = hypervisor.FakeHypervisor("compute1", state)
if phase == "crash":
    dom = host.connection.defineXML(f"""<domain type='kvm'>
<name>instance-1</name><uuid>{UUID}</uuid>
<metadata><nova:instance xmlns:nova="{hypervisor.NOVA_NS}">
<nova:root type="image" uuid="{hypervisor.WITHOUT_BALLOON_DRIVER_IMAGE}"/>
</nova:instance></metadata>
<memory>4194304</memory><currentMemory>1048576</currentMemory>
<vcpu current='1'>4</vcpu><os><type>hvm</type></os>
<devices><memballoon model='virtio'/></devices></domain>""")
    dom.create()
    dom.setVcpusFlags(3, LIVE)
    dom.setMemoryFlags(2048 * 1024, LIVE)
    # No save() and no clean exit: as a crash ends nova-compute.
    os.kill(os.getpid(), signal.SIGKILL)
restored = host.restore()
dom = host.connection.lookupByUUIDString(UUID)
print(json.dumps({
    "restored": restored, "active": dom.isActive(),
    "vcpus": dom.vcpusFlags(LIVE), "holds_kib": dom.memoryStats()["actual"],
    "balloon_driver": dom.behaviour.balloon_driver,
    "live": dom.live_state()}))
'''


def test_guests_of_a_killed_host_come_back_as_they_ran(tmp_path):
    """The fake hypervisor's state survives SIGKILL of its process.

    Each phase runs in an interpreter of its own: Nova's fixtures decide
    the process's concurrency mode when first imported.
    """
    env = {**os.environ, "PYTHONPATH": str(layout.REPO_ROOT)}

    def run(phase: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", KILLED_HOST, str(tmp_path), phase],
            capture_output=True, text=True, timeout=120, check=False,
            cwd=layout.REPO_ROOT, env=env)

    crashed = run("crash")
    assert crashed.returncode == -9, crashed.stderr[-3000:]
    restarted = run("restore")
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    out = json.loads(restarted.stdout.strip().splitlines()[-1])
    assert out["restored"] == 1
    assert out["active"]
    assert out["vcpus"] == 3
    # The guest still has no balloon driver, still holds all its memory and
    # its balloon target is still the one it was given before the crash.
    assert out["balloon_driver"] is False
    assert out["holds_kib"] == 4194304
    assert out["live"] == {"vcpus": 3, "memory_kib": 4194304,
                           "balloon_target_kib": 2097152,
                           "guest_offline_vcpus": [], "stats_period": 0}


@pytest.fixture(scope="module")
def crash(mariadb_cloud) -> CrashCloud:
    return CrashCloud(mariadb_cloud)


@pytest.fixture(scope="module")
def flavor(crash):
    name, vcpus, ram, minimums = FLAVOR
    created = crash.conn.compute.create_flavor(name=name, vcpus=vcpus,
                                               ram=ram, disk=1)
    crash.conn.compute.create_flavor_extra_specs(created, minimums)
    return created


def test_compute_killed_mid_adjustment_ends_it_when_started_again(
        crash, flavor):
    server = crash.boot(flavor, "crash-killed",
                        image=hypervisor.WITHOUT_BALLOON_DRIVER_IMAGE)
    host = server.compute_host
    before = crash.settled(server.id, host)
    # The guest image is what the test needs: QEMU gave the guest all of
    # its <memory> and, without a balloon driver, it keeps it.
    assert before["guest"]["balloon_driver"] is False, before["guest"]
    assert before["memory_mb"] == flavor.ram, before

    # vCPUs go through at once; the memory waits for a balloon that never
    # moves, up to [xloud] memory_confirm_timeout: the compute is killed in
    # that wait.  Whatever order the host applies them in, a restart that
    # does not re-read the domain leaves the record or placement wrong.
    vcpus, memory_mb = before["vcpus"] + 2, flavor.ram // 2
    resp = helpers.adjust(crash.conn, server.id, current_vcpus=vcpus,
                          current_memory_mb=memory_mb)
    assert resp.status_code == 202, resp.text
    request_id = resp.json()["adjustment"]["request_id"]

    def asked_for_the_memory():
        domain = crash.domain(host, server.id)
        if domain["balloon_target_mb"] == memory_mb:
            return domain
        return None, {"domain": domain["balloon_target_mb"],
                      "action": crash.action(server.id, request_id)}

    _wait_for(f"nova-compute on {host} to ask libvirt for the balloon "
              f"target of {memory_mb} MiB", asked_for_the_memory,
              IN_FLIGHT_TIMEOUT, interval=0.2)
    killed = crash.control("kill", host)
    restarted = False
    try:
        assert killed["returncode"] == -9, killed
        at_kill = crash.domain(host, server.id)
        assert at_kill["balloon_target_mb"] == memory_mb, (
            "the adjustment had already given up on the balloon (its target "
            f"was set back) before nova-compute was killed: {at_kill}")
        assert at_kill["memory_mb"] == flavor.ram, at_kill
        event = crash.event(server.id, request_id, helpers.EVENT)
        assert event is not None and not event["finish_time"], (
            f"the adjustment's {helpers.EVENT} event should be started and "
            f"unfinished when nova-compute is killed: {event}")
        assert crash.recorded(server.id)["adjustment"]["status"] == (
            "adjusting")

        crash.control("start", host)
        restarted = True
    finally:
        if not restarted:
            crash.control("start", host)

    def finished():
        event = crash.event(server.id, request_id, helpers.EVENT)
        if event and event["finish_time"]:
            return event
        return None, {"event": event,
                      "recorded": crash.recorded(server.id)["adjustment"]}

    event = _wait_for(f"the {helpers.EVENT} event of {request_id} to "
                      f"finish after nova-compute on {host} started again",
                      finished, RECONCILE_TIMEOUT)
    assert event["result"] == "Error", event
    assert RESTARTED in (event.get("details") or ""), event

    shown = helpers.size(crash.conn, server.id)
    assert shown["adjustment"]["status"] == "error", shown["adjustment"]
    assert RESTARTED in (shown["adjustment"]["error"] or ""), (
        shown["adjustment"])
    found = crash.server(server.id)
    assert found.task_state is None, found.task_state
    assert found.status == "ACTIVE", found.status

    domain = crash.domain(host, server.id)
    assert domain["state"] == hypervisor.RUNNING, (
        f"the guest did not survive the nova-compute restart: {domain}")
    allocations = crash.allocations(server.id)
    provider = crash.provider(host)
    assert set(allocations) == {provider}, allocations
    sizes = _sizes(domain, crash.recorded(server.id), allocations[provider])
    assert sizes["recorded"] == sizes["domain"], sizes
    assert sizes["allocation"] == sizes["domain"], sizes

    # Nothing is left stuck: the next adjustment runs to its end.
    resp = helpers.adjust(crash.conn, server.id, current_vcpus=2)
    assert resp.status_code == 202, resp.text
    done = helpers.wait_for_action(crash.conn, server.id,
                                   resp.json()["adjustment"]["request_id"])
    assert done["event"]["result"] == "Success", done
    assert crash.domain(host, server.id)["vcpus"] == 2
    assert crash.recorded(server.id)["current_vcpus"] == 2


def test_host_that_does_not_answer_gets_nothing_not_even_later(
        crash, flavor):
    server = crash.boot(flavor, "crash-paused")
    host = server.compute_host
    provider = crash.provider(host)
    before = crash.settled(server.id, host)
    recorded_before = crash.recorded(server.id)
    allocation_before = crash.allocations(server.id)
    vcpus = before["vcpus"] + 1
    memory_mb = before["memory_mb"] + 1024

    def nothing_changed(when: str) -> None:
        found = crash.server(server.id)
        assert (found.status, found.task_state) == ("ACTIVE", None), (
            f"{when}: {found.status}, task_state {found.task_state}")
        recorded = crash.recorded(server.id)
        assert recorded["adjustment"] == recorded_before["adjustment"], (
            f"{when}: {recorded['adjustment']}")
        allocations = crash.allocations(server.id)
        assert allocations == allocation_before, when
        sizes = _sizes(crash.domain(host, server.id), recorded,
                       allocations[provider])
        size = (before["vcpus"], before["memory_mb"])
        assert sizes == {"domain": size, "recorded": size,
                         "allocation": size}, f"{when}: {sizes}"

    crash.control("pause", host)
    try:
        started = time.monotonic()
        resp = helpers.adjust(crash.conn, server.id, current_vcpus=vcpus,
                              current_memory_mb=memory_mb)
        elapsed = time.monotonic() - started
        assert resp.status_code == 503, resp.text
        # It waited for the host, and not longer than it was told to.
        assert (crash.accept_timeout - 0.5 <= elapsed
                <= crash.accept_timeout + 10), (
            f"answered after {elapsed:.1f} s with [xloud] accept_timeout = "
            f"{crash.accept_timeout}")
        request_id = resp.headers["x-openstack-request-id"]
        event = crash.event(server.id, request_id, API_EVENT)
        assert event is not None and event["result"] == "Error", (
            crash.action(server.id, request_id))
        nothing_changed("while the host is paused")
    finally:
        crash.control("resume", host)

    # The host now reads the adjustment it was sent while paused, long
    # after nova-api gave up on it.  Once it answers a later call, the
    # earlier message has reached it too.
    def answers():
        shown = helpers.size(crash.conn, server.id)
        return shown if shown["source"] == "live" else (None, shown)

    _wait_for(f"nova-compute on {host} to answer again", answers, 30)
    time.sleep(LATE_MESSAGE_GRACE)
    nothing_changed(f"{LATE_MESSAGE_GRACE} s after the host resumed")
    assert crash.domain(host, server.id)["balloon_target_mb"] == (
        before["balloon_target_mb"])

    resp = helpers.adjust(crash.conn, server.id, current_vcpus=vcpus)
    assert resp.status_code == 202, resp.text
    done = helpers.wait_for_action(crash.conn, server.id,
                                   resp.json()["adjustment"]["request_id"])
    assert done["event"]["result"] == "Success", done
    assert crash.domain(host, server.id)["vcpus"] == vcpus
