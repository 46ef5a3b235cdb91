"""Balloon against virtio-mem: from the API call to the guest's own view.

Starts a real-hypervisor local cloud of its own (``up --hypervisor qemu
--no-seed``, as ``tests/e2e/test_real_hypervisor.py`` does, in a temporary
directory, every server on loopback), uploads the guest that loads
virtio-mem's driver (``seed.QEMU_GUEST_KINDS``), creates two flavors of
2 vCPUs / 1024 MiB with minimums 1 / 512 that differ only in
``xloud:memory_model`` and boots one guest of each, the balloon one on
compute1 from the default guest image, the virtio-mem one on compute2.
Once each guest shows its minimum and the sizing API says its memory is
adjustable, every iteration grows each guest to 1024 MiB and shrinks it
back to 512 MiB, one change at a time, by ``POST /os-xloud-adjust/{id}``
with ``persist`` false: nova-api, RPC, nova-compute with this project's
driver, the host's libvirtd, QEMU (TCG), the guest's driver.

For each change, from the start of the POST: *accepted*, the API's 202;
*done*, the instance action's ``compute_xloud_adjust`` event finished
(polled every 0.2 s; its result must be Success); *guest saw*, the
guest's status line (its serial console, Nova's ``console.log`` read
directly; printed every 0.3 s, which is the resolution) showing the new
size: MemTotal less the balloon's pages, which is what the balloon moves,
and MemTotal itself, which the virtio-mem driver changes.  Before each
change it waits, untimed, until the guest's balloon driver has sent its
statistics since the previous one (every 10 s here, ``[libvirt]
mem_stats_period_seconds``): the compute host refuses a virtio-mem
shrink into memory the guest uses, and reckons what it uses from them.
Prints a line per change and one table (median / max, and the ratio of
the medians virtio-mem / balloon); the cloud is stopped at the end, also
on an error or Ctrl-C.  Needs what the real-hypervisor cloud needs
(``tools/setup.sh``) and about three minutes, up to a minute and a half
of it the cloud's start.

Run: ``PYTHONPATH=. .venv/bin/python bench/api_memory.py [iterations]``
(default 3, at most 10).
"""

import contextlib
import dataclasses
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import libvirt
import openstack.exceptions

from deploy.localcloud import guestimage, libvirthost, seed
from tests.e2e import conftest, helpers

DEFAULT_ITERATIONS = 3
MAX_ITERATIONS = 10
MAX_VCPUS, MAX_MEMORY_MB = 2, 1024
MIN_VCPUS, MIN_MEMORY_MB = 1, 512
KIB_PER_MIB = 1024
# The cloud's start, the virtio-mem image's build and upload included.
START_TIMEOUT = 480
# A boot under TCG on two shared cores, to the balloon at the minimum.
GUEST_WAIT = 180
CHANGE_TIMEOUT = 90
# Three of the cloud's statistics periods.
STATISTICS_WAIT = 30
POLL = 0.05
ACTION_POLL = 0.2
METHODS = {
    "balloon": ("bench.balloon", seed.GUEST_IMAGE, "compute1"),
    "virtio-mem": ("bench.virtio-mem", seed.VIRTIO_MEM_GUEST_IMAGE,
                   "compute2"),
}
# nova_ext.sizing's extra spec; that module needs Nova's objects
# registered (as seed.MINIMUM_CPU).
MEMORY_MODEL = "xloud:memory_model"
CHANGES = {"grow": MAX_MEMORY_MB, "shrink": MIN_MEMORY_MB}
MEASURES = ("accepted", "done", "guest saw")
# The virtio-mem guest adds " memory_blocks=N" to the line.
STATUS_LINE = re.compile(
    rf"^{guestimage.STATUS_PREFIX} (boot|state) cpus=\d+ "
    r"memtotal_kb=(\d+) balloon_kb=(\d+)", re.M)


class BenchError(RuntimeError):
    """A guest or a change did not do what the benchmark waits for."""


@dataclasses.dataclass(frozen=True)
class View:
    """The guest's last status line and its boot line."""

    boot_usable_kb: int
    usable_kb: int


def guest_view(console_log: Path) -> View | None:
    try:
        text = console_log.read_text(errors="replace")
    except FileNotFoundError:
        return None
    lines = STATUS_LINE.findall(text)
    boots = [line for line in lines if line[0] == "boot"]
    if not boots:
        return None

    def usable(line: tuple[str, str, str]) -> int:
        # MemTotal less the balloon: the balloon guest's MemTotal stays
        # (deflate on OOM), the virtio-mem guest's balloon stays empty.
        return int(line[1]) - int(line[2])

    return View(usable(boots[-1]), usable(lines[-1]))


def shows(method: str, view: View | None, memory_mb: int) -> bool:
    """Whether the guest's view is ``memory_mb``.

    The boot line comes before the drivers load: the balloon guest has
    all of the flavor's memory then, the virtio-mem guest its minimum.
    """
    if view is None:
        return False
    if method == "balloon":
        delta_mb = memory_mb - MAX_MEMORY_MB
    else:
        delta_mb = memory_mb - MIN_MEMORY_MB
    return view.usable_kb == view.boot_usable_kb + delta_mb * KIB_PER_MIB


def parse_iterations(argv: list[str]) -> int:
    if len(argv) > 2:
        raise SystemExit(f"usage: {argv[0]} [iterations]")
    if len(argv) == 1:
        return DEFAULT_ITERATIONS
    try:
        iterations = int(argv[1])
    except ValueError:
        iterations = 0
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise SystemExit(f"iterations must be a whole number from 1 to "
                         f"{MAX_ITERATIONS}, not {argv[1]!r}")
    return iterations


@contextlib.contextmanager
def following(log_path: Path, say):
    """Says each line the launcher writes to ``log_path`` meanwhile: the
    cloud's start takes minutes."""
    stop = threading.Event()

    def follow() -> None:
        while not log_path.exists() and not stop.wait(0.5):
            pass
        with log_path.open(errors="replace") as log:
            while True:
                line = log.readline()
                if line:
                    say(f"cloud: {line.rstrip()}")
                elif stop.wait(0.5):
                    return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def create_flavor(conn, name: str, memory_model: str):
    flavor = conn.compute.create_flavor(
        name=name, vcpus=MAX_VCPUS, ram=MAX_MEMORY_MB, disk=1,
        is_public=True)
    conn.compute.create_flavor_extra_specs(flavor, {
        seed.MINIMUM_CPU: str(MIN_VCPUS),
        seed.MINIMUM_MEMORY: str(MIN_MEMORY_MB),
        MEMORY_MODEL: memory_model})
    return flavor


def wait_until_adjustable(conn, method: str, server_id: str,
                          console_log: Path) -> None:
    """The guest at its minimum, its memory adjustable for the API."""
    deadline = time.monotonic() + GUEST_WAIT
    while True:
        view = guest_view(console_log)
        reason = helpers.size(conn, server_id)["not_adjustable"][
            "memory_mb"]
        if shows(method, view, MIN_MEMORY_MB) and not reason:
            return
        if time.monotonic() > deadline:
            raise BenchError(
                f"the {method} guest {server_id} is not adjustable at "
                f"{MIN_MEMORY_MB} MiB after {GUEST_WAIT} s: its view "
                f"{view}, the API's reason {reason!r}; see {console_log}")
        time.sleep(1)


def wait_for_statistics(domain: libvirt.virDomain, since: float) -> None:
    """Until QEMU has the balloon driver's statistics from after
    ``since`` (seconds since the epoch; QEMU keeps whole seconds)."""
    deadline = time.monotonic() + STATISTICS_WAIT
    while int(domain.memoryStats().get("last_update", 0)) <= since:
        if time.monotonic() > deadline:
            raise BenchError(
                f"{domain.name()}: no balloon statistics since {since:.0f} "
                f"after {STATISTICS_WAIT} s: {domain.memoryStats()}")
        time.sleep(0.5)


def finished_event(conn, server_id: str, request_id: str) -> dict | None:
    resp = conn.compute.get(
        f"/servers/{server_id}/os-instance-actions/{request_id}",
        microversion="2.51")
    openstack.exceptions.raise_from_response(resp)
    events = [e for e in resp.json()["instanceAction"].get("events", [])
              if e["event"] == helpers.EVENT and e.get("finish_time")]
    return events[-1] if events else None


def change(conn, method: str, server_id: str, console_log: Path,
           memory_mb: int) -> tuple[float, float, float]:
    """(accepted, done, guest saw) in seconds from the POST's start."""
    started = time.monotonic()
    resp = helpers.adjust(conn, server_id, current_memory_mb=memory_mb,
                          persist=False)
    accepted = time.monotonic() - started
    if resp.status_code != 202:
        raise BenchError(f"{method} to {memory_mb} MiB: "
                         f"{resp.status_code} {resp.text}")
    request_id = resp.json()["adjustment"]["request_id"]
    done = seen = None
    polled = 0.0
    while done is None or seen is None:
        elapsed = time.monotonic() - started
        if elapsed > CHANGE_TIMEOUT:
            raise BenchError(
                f"{method} to {memory_mb} MiB ({request_id}): "
                f"{'done' if done else 'not done'}, "
                f"{'seen' if seen else 'not seen'} by the guest after "
                f"{CHANGE_TIMEOUT} s; its view {guest_view(console_log)}")
        if seen is None and shows(method, guest_view(console_log),
                                  memory_mb):
            seen = elapsed
        if done is None and elapsed - polled >= ACTION_POLL:
            polled = elapsed
            event = finished_event(conn, server_id, request_id)
            if event is not None:
                if event["result"] != "Success":
                    raise BenchError(
                        f"{method} to {memory_mb} MiB ({request_id}): "
                        f"{event['result']}: "
                        f"{helpers.size(conn, server_id)['adjustment']}")
                done = time.monotonic() - started
        time.sleep(POLL)
    return accepted, done, seen


def print_table(iterations: int,
                samples: dict[tuple[str, str], list[tuple]]) -> None:
    print(f"\n{iterations} iterations through POST /os-xloud-adjust, "
          f"{MIN_MEMORY_MB} <-> {MAX_MEMORY_MB} MiB, seconds from the "
          f"POST (median / max)")
    methods = list(METHODS)
    print(f"{'change':7} {'':10} " + " ".join(
        f"{m:>13}" for m in methods) + f" {'virtio-mem/balloon':>19}")
    for change_name in CHANGES:
        for index, measure in enumerate(MEASURES):
            medians = {}
            cells = []
            for method in methods:
                values = [s[index] for s in samples[(method, change_name)]]
                medians[method] = statistics.median(values)
                cells.append(f"{medians[method]:.2f} / {max(values):.2f}")
            ratio = (medians["virtio-mem"] / medians["balloon"]
                     if medians["balloon"] else float("nan"))
            print(f"{change_name:7} {measure:10} "
                  + " ".join(f"{c:>13}" for c in cells)
                  + f" {ratio:>18.2f}x")


def main() -> None:
    iterations = parse_iterations(sys.argv)
    missing = libvirthost.missing_prerequisites()
    if missing:
        raise SystemExit("the real-hypervisor cloud needs "
                         + "; ".join(missing))
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    state = Path(tempfile.mkdtemp(prefix="xloud-bench-"))
    log_path = conftest.REPO / "artifacts" / "bench-api-memory.log"
    # Followed from its start: not an earlier run's.
    log_path.unlink(missing_ok=True)
    say(f"starting the real-hypervisor cloud in {state} (log {log_path})")
    try:
        samples = run(state, log_path, iterations, say)
    except BaseException:
        say(f"stopped; the cloud's state and logs are kept in {state}")
        raise
    shutil.rmtree(state)
    print_table(iterations, samples)


def run(state: Path, log_path: Path, iterations: int,
        say) -> dict[tuple[str, str], list[tuple]]:
    samples: dict[tuple[str, str], list[tuple]] = {}
    cloud = conftest.launched_cloud(state, log_path, "sqlite", START_TIMEOUT,
                                    "--hypervisor", "qemu", "--no-seed")
    with contextlib.ExitStack() as stack:
        with following(log_path, say):
            info = stack.enter_context(cloud)
        say("cloud up")
        conn = conftest._connect(info, "admin")
        seed.upload_guest_images(conn, say, kinds=seed.QEMU_GUEST_KINDS)
        instances = Path(info["state_dir"]) / "nova" / "instances"
        servers = {}
        for method, (flavor_name, image, host) in METHODS.items():
            flavor = create_flavor(conn, flavor_name, method)
            image_id = conn.image.find_image(image, ignore_missing=False).id
            servers[method] = conn.compute.create_server(
                name=f"bench-{method}", image_id=image_id,
                flavor_id=flavor.id, networks="none",
                availability_zone=f"nova:{host}").id
        consoles = {method: instances / server_id / "console.log"
                    for method, server_id in servers.items()}
        for server_id in servers.values():
            conn.compute.wait_for_server(
                conn.compute.get_server(server_id), status="ACTIVE",
                failures=["ERROR"], wait=GUEST_WAIT)
        say("both guests ACTIVE, waiting for their drivers")
        hosts = Path(info["state_dir"]) / "nova" / "hosts"
        domains = {}
        for method, (_flavor, _image, host) in METHODS.items():
            virt = libvirt.open(libvirthost.connection_uri(hosts / host))
            stack.callback(virt.close)
            domains[method] = virt.lookupByName(
                conn.compute.get_server(servers[method]).instance_name)
        for method, server_id in servers.items():
            wait_until_adjustable(conn, method, server_id, consoles[method])
            say(f"{method} guest at {MIN_MEMORY_MB} MiB, adjustable")
        changed = dict.fromkeys(METHODS, time.time())
        for iteration in range(1, iterations + 1):
            for method, server_id in servers.items():
                for change_name, memory_mb in CHANGES.items():
                    wait_for_statistics(domains[method], changed[method])
                    sample = change(conn, method, server_id,
                                    consoles[method], memory_mb)
                    changed[method] = time.time()
                    samples.setdefault((method, change_name),
                                       []).append(sample)
                    say(f"{iteration}/{iterations} {method:10} "
                        f"{change_name:6} accepted {sample[0]:5.2f} s, "
                        f"done {sample[1]:5.2f} s, guest saw "
                        f"{sample[2]:5.2f} s")
        say("stopping the cloud")
    return samples


if __name__ == "__main__":
    main()
