"""The whole chain on a real hypervisor, watched from inside the guest.

A local cloud of its own in the real-hypervisor mode (``up --hypervisor
qemu``): each compute host is Nova's libvirt driver with this project's
driver class on a libvirtd of its own, running QEMU (TCG here), booting
the project's guest from Glance.  The guest prints its own view (online
CPUs, MemTotal, the pages its balloon driver holds) on its serial console,
which is Nova's console log; every test reads it through
``os-getConsoleOutput``, and compares it with the record (the sizing API),
the domain (libvirt's own daemon of that host) and placement.

Guests are few and small: one elastic guest goes through every step in
order, one guest without a balloon driver is booted at the start and
checked at the end.  Each step prints how long it took.

nova-compute runs its autopilot (doc/autopilot.md) with its waits scaled
down to seconds; only the last test's guest opts in (its flavor's
``xloud:autosize``): a program started in it through the guest agent
needs more memory than the guest has at its minimum, and the autopilot
grows it in time and shrinks it back after.
"""

import contextlib
import dataclasses
import datetime
import re
import time
from pathlib import Path

import libvirt
import openstack.exceptions
import pytest
from lxml import etree
from selenium.webdriver.common.by import By

from deploy.localcloud import guestimage, libvirthost, seed
from nova_ext import sizing
from nova_ext.virt import live
from tests.e2e import conftest, helpers
from tests.e2e.panel import CLOUD_WAIT, Panel
from tests.realguest import autopilot_guest

# The first start builds the images and, once per machine, downloads the
# Debian kernel.
START_TIMEOUT = 600
# A guest boot under TCG on two busy cores, its balloon driver included.
GUEST_WAIT = 180
FLAVOR = "e2e.qemu-elastic"
MAX_VCPUS, MAX_MEMORY_MB = 2, 1024
MIN_VCPUS, MIN_MEMORY_MB = 1, 512
# Kept through every lifecycle step below: neither the flavor's maximum
# nor its minimum in memory.
PERSISTED = (2, 768)
STATE_LINE = re.compile(
    rf"^{guestimage.STATUS_PREFIX} (boot|state) cpus=(\d+) "
    r"memtotal_kb=(\d+) balloon_kb=(\d+)$", re.M)
# [xloud_autopilot] of the cloud: its waits in seconds, not minutes
# (interval at its minimum, the balloon statistics' period).
AUTOPILOT = {"mode": "on", "interval": 10, "min_samples": 2,
             "grow_after": 20, "shrink_after": 30, "cooldown": 20,
             "reverse_cooldown": 30, "window_seconds": 600}
AUTOSIZE_FLAVOR = "e2e.qemu-autosize"
AUTO_CHANGE = re.compile(
    rf"^{sizing.AUTO_EVENT}: memory (\d+) → (\d+) MiB: ")
# The program loads this much less than the guest has usable at its
# minimum at once, then adds STEP_MB every STEP_SECONDS (1 MiB/s) up to
# this much more than it has usable: about 75 s from the low band to
# running out at the minimum, in which the first sample below it (a
# statistics period and an interval late at most), grow_after and the
# adjustment must fit.
LOAD_BELOW_USABLE_MB = 88
TOTAL_ABOVE_USABLE_MB = 32
STEP_MB = 4
STEP_SECONDS = 4
HOLD_SECONDS = 5
# From the program's start to the shrink: the ramp (120 s), shrink_after
# and up to two intervals and a statistics period of lag.
AUTOPILOT_TIMEOUT = 240


@dataclasses.dataclass(frozen=True)
class GuestView:
    """What the guest last printed about itself."""

    boots: int
    cpus: int
    balloon_mb: int

    def memory_mb(self, max_memory_mb: int) -> int:
        # QEMU gives the guest <memory>; the balloon holds the rest back.
        return max_memory_mb - self.balloon_mb


class Step:
    """Prints how long each step of the chain took."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    @contextlib.contextmanager
    def __call__(self, what: str):
        began = time.monotonic()
        try:
            yield
        finally:
            print(f"\n[real hypervisor] {what}: "
                  f"{time.monotonic() - began:.1f} s", flush=True)


@pytest.fixture(scope="module")
def qemu_cloud(elastic_driver) -> dict:
    missing = libvirthost.missing_prerequisites()
    if missing:
        pytest.skip("the real-hypervisor cloud needs " + "; ".join(missing))
    began = time.monotonic()
    autopilot = [argument for key, value in AUTOPILOT.items()
                 for argument in ("--autopilot", f"{key}={value}")]
    with conftest._launched("e2e-localcloud-qemu", "sqlite", START_TIMEOUT,
                            "--hypervisor", "qemu", "--no-seed",
                            *autopilot) as info:
        print(f"\n[real hypervisor] cloud up: "
              f"{time.monotonic() - began:.1f} s", flush=True)
        yield info


@pytest.fixture(scope="module")
def conn(qemu_cloud):
    return conftest._connect(qemu_cloud, "admin")


@pytest.fixture(scope="module")
def step() -> Step:
    return Step()


@pytest.fixture(scope="module")
def flavor(conn):
    flavor = conn.compute.create_flavor(
        name=FLAVOR, vcpus=MAX_VCPUS, ram=MAX_MEMORY_MB, disk=1,
        is_public=True)
    conn.compute.create_flavor_extra_specs(flavor, {
        seed.MINIMUM_CPU: str(MIN_VCPUS),
        seed.MINIMUM_MEMORY: str(MIN_MEMORY_MB)})
    return flavor


def _boot(conn, flavor, name: str, image: str, host: str):
    image_id = conn.image.find_image(image, ignore_missing=False).id
    return conn.compute.create_server(
        name=name, image_id=image_id, flavor_id=flavor.id, networks="none",
        availability_zone=f"nova:{host}")


@pytest.fixture(scope="module")
def servers(conn, flavor, step):
    """The elastic guest on compute1, the one without a balloon driver on
    compute2; both booted at once, deleted at the end."""
    with step("boot two guests to ACTIVE"):
        elastic = _boot(conn, flavor, "e2e-qemu-elastic", seed.GUEST_IMAGE,
                        "compute1")
        no_balloon = _boot(conn, flavor, "e2e-qemu-no-balloon",
                           seed.GUEST_KINDS[0].name, "compute2")
        for server in (elastic, no_balloon):
            conn.compute.wait_for_server(server, status="ACTIVE",
                                         failures=["ERROR"], wait=GUEST_WAIT)
    yield {"elastic": elastic.id, "no_balloon": no_balloon.id}
    # Not waited for: the cloud, its own, stops next and powers off what
    # is left.
    for server in (elastic, no_balloon):
        conn.compute.delete_server(server, ignore_missing=True)


@pytest.fixture(scope="module")
def panel(browser_module, qemu_cloud):
    panel = Panel(browser_module, qemu_cloud, "qemu")
    try:
        panel.login(qemu_cloud["admin"]["username"],
                    qemu_cloud["admin"]["password"])
        yield panel
    finally:
        panel.close()


def console_output(conn, server_id: str) -> str:
    resp = conn.compute.post(f"/servers/{server_id}/action",
                             json={"os-getConsoleOutput": {}})
    openstack.exceptions.raise_from_response(resp)
    return resp.json()["output"]


def guest_view(output: str) -> GuestView | None:
    lines = STATE_LINE.findall(output)
    if not lines:
        return None
    boots = sum(kind == "boot" for kind, *_ in lines)
    _kind, cpus, _memtotal, balloon_kb = lines[-1]
    return GuestView(boots, int(cpus), int(balloon_kb) // 1024)


def booted_since(output: str, before: str) -> bool:
    """Whether the guest booted after ``before`` was read: QEMU either
    starts the console log afresh or appends a new boot line to it."""
    return not output.startswith(before) or (
        guest_view(output).boots > guest_view(before).boots)


def wait_for_guest(conn, server_id: str, size: tuple[int, int],
                   before: str | None = None) -> GuestView:
    """Until the guest shows ``size`` (vCPUs online, memory its balloon
    leaves it), from a boot after ``before`` when given."""
    deadline = time.monotonic() + GUEST_WAIT
    while True:
        output = console_output(conn, server_id)
        view = guest_view(output)
        if view and (before is None or booted_since(output, before)) and (
                view.cpus, view.memory_mb(MAX_MEMORY_MB)) == size:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the guest of {server_id} shows {view}, not {size}"
                + (" after a new boot" if before is not None else ""))
        time.sleep(1)


def host_libvirt(cloud: dict, host: str) -> libvirt.virConnect:
    """A connection to the compute host's own libvirtd."""
    return libvirt.open(libvirthost.connection_uri(
        Path(cloud["state_dir"]) / "nova" / "hosts" / host))


def domain_size(cloud: dict, conn, server_id: str) -> dict:
    """The domain as its host's libvirtd reports it: live and persistent."""
    server = conn.compute.get_server(server_id)
    virt = host_libvirt(cloud, server.compute_host)
    try:
        dom = virt.lookupByName(server.instance_name)
        state, _max_kib, memory_kib, vcpus, _time = dom.info()
        persistent = etree.fromstring(
            dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        vcpu = persistent.find("vcpu")
        return {
            "host": server.compute_host,
            "running": state == libvirt.VIR_DOMAIN_RUNNING,
            "live": (vcpus, memory_kib // 1024),
            "persistent": (int(vcpu.get("current", vcpu.text)),
                           int(persistent.findtext("currentMemory"))
                           // 1024),
        }
    finally:
        virt.close()


def allocation(conn, server_id: str) -> tuple[int, int]:
    (resources,) = helpers.allocations(conn, server_id).values()
    return resources["VCPU"], resources["MEMORY_MB"]


def assert_everywhere(cloud: dict, conn, server_id: str,
                      size: tuple[int, int], persistent: tuple[int, int],
                      host: str | None = None) -> None:
    """Record, domain (live and persistent) and placement agree."""
    deadline = time.monotonic() + 30
    while True:
        entry = helpers.size(conn, server_id)
        seen = {
            "record": (entry["current_vcpus"], entry["current_memory_mb"]),
            "domain": domain_size(cloud, conn, server_id),
            "placement": allocation(conn, server_id),
        }
        wanted = {"record": size, "placement": size,
                  "domain": {"host": host or seen["domain"]["host"],
                             "running": True, "live": size,
                             "persistent": persistent}}
        if seen == wanted:
            return
        if time.monotonic() > deadline:
            assert seen == wanted
        time.sleep(1)


def show_console_log(panel: Panel, server_id: str, what: str) -> str:
    """Horizon's instance Log tab; its text once the guest's lines show."""
    panel.driver.get(f"{panel.base_url}/admin/instances/{server_id}/detail"
                     f"?tab=instance_details__log")
    pre = panel.wait(lambda driver: [
        e for e in driver.find_elements(By.CSS_SELECTOR, "pre.logs")
        if guestimage.STATUS_PREFIX in e.text])[0]
    panel.shot(what)
    return pre.text


def adjust_in_panel(panel: Panel, conn, server_id: str, values: dict,
                    outcome: str) -> str:
    """Submit the Adjust form of the server's row; the row's text once it
    shows ``outcome`` (the adjustment status column: Done, Failed)."""
    panel.open("?all_tenants=1")
    panel.open_row_action("instances", server_id, "adjust")
    form = panel.modal()
    panel.fill(form, values)
    panel.submit(form)
    name = conn.compute.get_server(server_id).name
    panel.wait_for_message(f'Adjusting instance "{name}"')
    return panel.wait_for_row("instances", server_id, outcome)


def last_event(conn, server_id: str) -> dict:
    entry = helpers.size(conn, server_id)
    return helpers.wait_for_action(
        conn, server_id, entry["adjustment"]["request_id"],
        timeout=CLOUD_WAIT)["event"]


def test_boots_at_its_minimum(qemu_cloud, conn, servers, step):
    server_id = servers["elastic"]
    with step("guest reaches its minimum (balloon driver up)"):
        wait_for_guest(conn, server_id, (MIN_VCPUS, MIN_MEMORY_MB))
    minimum = (MIN_VCPUS, MIN_MEMORY_MB)
    assert_everywhere(qemu_cloud, conn, server_id, minimum, minimum,
                      host="compute1")
    with step("readiness read from the guest (agent, balloon statistics)"):
        deadline = time.monotonic() + GUEST_WAIT
        while True:
            shown = helpers.size(conn, server_id)
            ready = shown["readiness"]
            # Statistics come once a period: those sent before the
            # balloon reached the minimum give no figure.
            if (ready["guest_agent"], ready["balloon"]) == (
                    "answering", "active") and (
                    shown["utilisation"]["memory"] is not None):
                break
            assert time.monotonic() < deadline, ready
            time.sleep(2)
    assert (ready["vcpu_hotplug"], ready["adjustable"]) == (
        "possible", {"vcpus": True, "memory_mb": True}), ready
    assert shown["guest"]["online_vcpus"] == MIN_VCPUS
    memory = shown["utilisation"]["memory"]
    assert 0 < memory["used_mb"] < memory["current_mb"] == MIN_MEMORY_MB


def test_grow_in_the_panel_shows_in_the_guest(qemu_cloud, conn, servers,
                                              panel, step):
    server_id = servers["elastic"]
    panel.prefix, panel.step = "qemu-grow", 0
    before = STATE_LINE.findall(
        show_console_log(panel, server_id, "console-before"))[-1]
    assert (int(before[1]), int(before[3])) == (
        MIN_VCPUS, (MAX_MEMORY_MB - MIN_MEMORY_MB) * 1024), before
    with step("grow to 2 vCPUs / 1024 MiB in the panel"):
        adjust_in_panel(panel, conn, server_id,
                        {"vcpus": MAX_VCPUS, "memory_mb": MAX_MEMORY_MB},
                        "Done")
        assert last_event(conn, server_id)["result"] == "Success"
        wait_for_guest(conn, server_id, (MAX_VCPUS, MAX_MEMORY_MB))
    after = show_console_log(panel, server_id, "console-after")
    last = STATE_LINE.findall(after)[-1]
    assert (int(last[1]), int(last[3])) == (MAX_VCPUS, 0), last
    size = (MAX_VCPUS, MAX_MEMORY_MB)
    assert_everywhere(qemu_cloud, conn, server_id, size, size)


def test_unplug_qemu_does_not_confirm_is_an_error(qemu_cloud, conn,
                                                  servers, panel, step):
    """Under TCG, QEMU never reports a vCPU unplug done: libvirt times out
    and the extension records the two vCPUs the domain still has."""
    server_id = servers["elastic"]
    panel.prefix, panel.step = "qemu-unplug", 0
    with step("unplug a vCPU in the panel"):
        adjust_in_panel(panel, conn, server_id,
                        {"vcpus": MIN_VCPUS, "memory_mb": MAX_MEMORY_MB},
                        "Failed")
    panel.shot("unplug-error")
    event = last_event(conn, server_id)
    assert event["result"] == "Error"
    entry = helpers.size(conn, server_id)
    assert "not confirmed" in entry["adjustment"]["error"]
    size = (MAX_VCPUS, MAX_MEMORY_MB)
    assert_everywhere(qemu_cloud, conn, server_id, size, size)


def test_memory_shrink_is_persisted(qemu_cloud, conn, servers, step):
    server_id = servers["elastic"]
    with step("shrink memory to 768 MiB through the API"):
        resp = helpers.adjust(conn, server_id,
                              current_memory_mb=PERSISTED[1], persist=True)
        assert resp.status_code == 202, resp.text
        assert last_event(conn, server_id)["result"] == "Success"
    assert_everywhere(qemu_cloud, conn, server_id, PERSISTED, PERSISTED)


@pytest.mark.parametrize("operation", [
    "hard reboot", "soft reboot", "stop and start",
    "cold migration to compute2"])
def test_lifecycle_keeps_the_persisted_size(qemu_cloud, conn, servers, step,
                                            operation):
    server_id = servers["elastic"]
    before = console_output(conn, server_id)
    host = None
    with step(operation):
        if operation == "hard reboot":
            conn.compute.reboot_server(server_id, "HARD")
        elif operation == "soft reboot":
            conn.compute.reboot_server(server_id, "SOFT")
        elif operation == "stop and start":
            conn.compute.stop_server(server_id)
            helpers.wait_for_status(conn, server_id, "SHUTOFF", GUEST_WAIT)
            conn.compute.start_server(server_id)
        else:
            host = "compute2"
            resp = conn.compute.post(
                f"/servers/{server_id}/action",
                json={"migrate": {"host": host}}, microversion="2.56")
            openstack.exceptions.raise_from_response(resp)
            helpers.wait_for_status(conn, server_id, "VERIFY_RESIZE",
                                    GUEST_WAIT)
            conn.compute.confirm_server_resize(server_id)
        helpers.wait_for_status(conn, server_id, "ACTIVE", GUEST_WAIT)
        # The guest booted again, at the kept size.
        wait_for_guest(conn, server_id, PERSISTED, before)
    assert_everywhere(qemu_cloud, conn, server_id, PERSISTED, PERSISTED,
                      host=host)


def test_guest_without_balloon_driver(qemu_cloud, conn, servers, panel,
                                      step):
    server_id = servers["no_balloon"]
    panel.prefix, panel.step = "qemu-no-balloon", 0
    with step("boot memory found unanswered"):
        deadline = time.monotonic() + GUEST_WAIT
        while not (reason := helpers.size(conn, server_id)[
                "not_adjustable"]["memory_mb"]):
            assert time.monotonic() < deadline, helpers.size(conn, server_id)
            time.sleep(2)
    assert "balloon" in reason
    # Its guest sends no balloon statistics: nothing to measure.
    shown = helpers.size(conn, server_id)
    assert shown["readiness"]["balloon"] in ("no_statistics", "silent")
    assert shown["readiness"]["adjustable"]["memory_mb"] is False
    assert shown["utilisation"]["memory"] is None
    # It holds all of its memory, and says so itself.
    view = guest_view(console_output(conn, server_id))
    assert view.balloon_mb == 0
    size = (MIN_VCPUS, MAX_MEMORY_MB)
    assert_everywhere(qemu_cloud, conn, server_id, size,
                      (MIN_VCPUS, MIN_MEMORY_MB), host="compute2")

    panel.open("?all_tenants=1")
    panel.open_row_action("instances", server_id, "adjust")
    form = panel.modal()
    memory = form.find_element(By.NAME, "memory_mb")
    assert memory.get_attribute("disabled")
    assert "balloon" in form.text
    panel.shot("memory-not-adjustable")

    resp = helpers.adjust(conn, server_id, current_memory_mb=768)
    assert resp.status_code == 409, resp.text
    assert "balloon" in resp.json()["conflictingRequest"]["message"]
    assert_everywhere(qemu_cloud, conn, server_id, size,
                      (MIN_VCPUS, MIN_MEMORY_MB))


@pytest.fixture(scope="module")
def autosize_flavor(conn):
    flavor = conn.compute.create_flavor(
        name=AUTOSIZE_FLAVOR, vcpus=MAX_VCPUS, ram=MAX_MEMORY_MB, disk=1,
        is_public=True)
    conn.compute.create_flavor_extra_specs(flavor, {
        seed.MINIMUM_CPU: str(MIN_VCPUS),
        seed.MINIMUM_MEMORY: str(MIN_MEMORY_MB),
        sizing.AUTOSIZE: "memory"})
    return flavor


@pytest.fixture
def autosize_guest(qemu_cloud, conn, autosize_flavor, step):
    """A guest of the autosize flavor on compute1 at its minimum, its
    agent answering: its server id and its domain on that host's
    libvirtd."""
    server = _boot(conn, autosize_flavor, "e2e-qemu-autosize",
                   seed.GUEST_IMAGE, "compute1")
    virt = host_libvirt(qemu_cloud, "compute1")
    try:
        with step("autosize guest to ACTIVE, at its minimum, agent up"):
            conn.compute.wait_for_server(server, status="ACTIVE",
                                         failures=["ERROR"], wait=GUEST_WAIT)
            wait_for_guest(conn, server.id, (MIN_VCPUS, MIN_MEMORY_MB))
            domain = virt.lookupByName(
                conn.compute.get_server(server.id).instance_name)
            autopilot_guest.wait_for_agent(domain, GUEST_WAIT)
        yield server.id, domain
    finally:
        virt.close()
        conn.compute.delete_server(server, ignore_missing=True)


@dataclasses.dataclass(frozen=True)
class AutoChange:
    """One finished change of the autopilot (an xloud-autosize action),
    its times in seconds after the program started."""

    user_id: str | None
    event: dict
    current: int
    target: int
    decided: float
    confirmed: float


def _seconds_after(stamp: str, wall: float) -> float:
    at = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if at.tzinfo is None:
        at = at.replace(tzinfo=datetime.UTC)
    return at.timestamp() - wall


def auto_changes(conn, server_id: str, wall: float) -> list[AutoChange]:
    """The autopilot's finished changes of the server, oldest first."""
    resp = conn.compute.get(f"/servers/{server_id}/os-instance-actions")
    openstack.exceptions.raise_from_response(resp)
    changes = []
    for action in resp.json()["instanceActions"]:
        if action["action"] != sizing.AUTO_ACTION:
            continue
        shown = conn.compute.get(
            f"/servers/{server_id}/os-instance-actions/"
            f"{action['request_id']}", microversion="2.51")
        openstack.exceptions.raise_from_response(shown)
        events = [event for event in shown.json()["instanceAction"]["events"]
                  if event["event"].startswith(sizing.AUTO_EVENT)
                  and event.get("finish_time")]
        if not events:
            continue
        (event,) = events
        change = AUTO_CHANGE.match(event["event"])
        assert change, event
        changes.append(AutoChange(
            action["user_id"], event, int(change[1]), int(change[2]),
            _seconds_after(event["start_time"], wall),
            _seconds_after(event["finish_time"], wall)))
    return sorted(changes, key=lambda change: change.decided)


def _usable_at_the_minimum(domain) -> int:
    """What the guest can use at its minimum, from statistics sent since
    its balloon reached it."""
    deadline = time.monotonic() + GUEST_WAIT
    while True:
        pressure = live.read_pressure(domain)
        if pressure.usable_mb is not None and (
                pressure.usable_mb < pressure.size.memory_mb
                == MIN_MEMORY_MB):
            return pressure.usable_mb
        assert time.monotonic() < deadline, pressure
        time.sleep(2)


def test_autopilot_grows_a_guest_short_of_memory_then_shrinks_it(
        qemu_cloud, conn, autosize_guest, step):
    """The autopilot of nova-compute, not the test, sizes the guest: the
    test only starts the program and watches."""
    server_id, domain = autosize_guest
    usable_mb = _usable_at_the_minimum(domain)
    workset = autopilot_guest.Workset(
        load_mb=usable_mb - LOAD_BELOW_USABLE_MB,
        total_mb=usable_mb + TOTAL_ABOVE_USABLE_MB, step_mb=STEP_MB,
        step_seconds=STEP_SECONDS, hold_seconds=HOLD_SECONDS)
    decisions: list[str] = []

    def context() -> str:
        lines = console_output(conn, server_id).splitlines()
        return ("autopilot decisions:\n" + "\n".join(decisions)
                + "\nconsole tail:\n" + "\n".join(lines[-15:]))

    wall, started = time.time(), time.monotonic()
    pid = autopilot_guest.start_program(domain, workset.script())
    program: autopilot_guest.ProgramStatus | None = None
    exited: float | None = None
    # What the program reported holding when the grow was seen.
    workset_at_grow: int | None = None
    # The autopilot's decisions, as the API shows them, once an interval.
    next_read, last_decision = started, None
    with step("program in the guest: the autopilot grows it, then shrinks "
              "it after the program exits"):
        while len(changes := auto_changes(conn, server_id, wall)) < 2:
            elapsed = time.monotonic() - started
            assert elapsed < AUTOPILOT_TIMEOUT, (
                f"{len(changes)} automatic changes within "
                f"{AUTOPILOT_TIMEOUT} s; program {program}:\n{context()}")
            if program is None:
                status = autopilot_guest.program_status(domain, pid)
                if status.exited:
                    program, exited = status, elapsed
            if changes and workset_at_grow is None:
                workset_at_grow = autopilot_guest.workset_mb(
                    console_output(conn, server_id).splitlines()) or 0
                grown = (MIN_VCPUS, changes[0].target)
                assert_everywhere(qemu_cloud, conn, server_id, grown, grown,
                                  host="compute1")
                wait_for_guest(conn, server_id, grown)
            if time.monotonic() >= next_read:
                next_read += AUTOPILOT["interval"]
                shown = helpers.size(conn, server_id).get("autopilot") or {}
                for decision in shown.get("decisions", []):
                    line = f"{decision['action']}: {decision['reason']}"
                    if line != last_decision:
                        last_decision = line
                        decisions.append(f"{elapsed:5.1f} s {line}")
            time.sleep(2)
    if program is None:
        program = autopilot_guest.program_status(domain, pid)
        exited = time.monotonic() - started
    assert len(changes) == 2, changes
    grow, shrink = changes
    # Grown from the minimum: the guest had not taken memory back from
    # its balloon (autodeflate) before the autopilot gave it some.
    assert grow.event["event"].startswith(
        f"{sizing.AUTO_EVENT}: memory {MIN_MEMORY_MB} → "), grow.event
    assert grow.event["result"] == "Success", grow.event
    assert MIN_MEMORY_MB < grow.target <= MAX_MEMORY_MB
    # The program ran to its end, never killed.
    assert program.exited and (program.exitcode, program.signal) == (
        0, None), f"{program}\n{context()}"
    lines = console_output(conn, server_id).splitlines()
    assert max(autopilot_guest.workset_reports(lines)) == workset.total_mb, (
        context())
    assert autopilot_guest.out_of_memory_lines(lines) == [], context()
    # Grown while the program still built its working set, before it
    # held more than the guest could at its minimum.
    assert grow.confirmed < exited, (grow, exited)
    assert workset_at_grow is not None and (
        workset_at_grow < usable_mb < workset.total_mb), (workset_at_grow,
                                                          context())
    # Shrunk once the program had freed its memory and exited.
    assert shrink.event["event"].startswith(
        f"{sizing.AUTO_EVENT}: memory {grow.target} → "), shrink.event
    assert shrink.event["result"] == "Success", shrink.event
    assert MIN_MEMORY_MB <= shrink.target < grow.target
    assert shrink.decided > exited, (shrink, exited)
    # Made by no user, as the autopilot's own.
    assert (grow.user_id, shrink.user_id) == (None, None)
    shrunk = (MIN_VCPUS, shrink.target)
    assert_everywhere(qemu_cloud, conn, server_id, shrunk, shrunk,
                      host="compute1")
    wait_for_guest(conn, server_id, shrunk)
    print(f"\n[real hypervisor] autopilot: usable {usable_mb} MiB at "
          f"{MIN_MEMORY_MB} MiB; the program held {workset.load_mb} MiB, "
          f"then {STEP_MB} MiB more every {STEP_SECONDS} s up to "
          f"{workset.total_mb} MiB", flush=True)
    print(f"[real hypervisor] autopilot: grow decided {grow.decided:.1f} s "
          f"after the program started, confirmed {grow.confirmed:.1f} s, "
          f"the program holding {workset_at_grow} MiB: "
          f"{grow.event['event']}", flush=True)
    print(f"[real hypervisor] autopilot: the program exited {exited:.1f} s "
          f"after its start; shrink decided {shrink.decided - exited:.1f} s "
          f"after its exit, confirmed {shrink.confirmed - exited:.1f} s: "
          f"{shrink.event['event']}", flush=True)
