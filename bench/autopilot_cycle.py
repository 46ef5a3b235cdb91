"""The autopilot's own cost per host per cycle, at 50 and 500 guests.

Three parts of one cycle of ``[xloud_autopilot]`` (doc/autopilot.md), each
timed per cycle in CPU time (``time.process_time``: this process, which
is nova-compute's share) and wall time, the median of ``--cycles``:

(a) sampling: ``live.read_pressure`` of every guest;
(b) the decision engine: one ``GuestHistory.add`` per guest and
    ``plan_host`` over the host, every history full (``max_samples``
    samples, spaced ``window_seconds / max_samples`` apart so that many
    fit in the window; at ``interval`` 60 s the default window keeps 31),
    the guests showing a seeded mix of pressed, idle and in-band memory
    and vCPUs, so that every kind of decision is made;
(c) the whole ``AutopilotRunner.run_once`` in mode ``recommend`` (``on``
    adjusts through Nova's database and placement: bench/live_adjust.py
    has libvirt's side of that), with the real ElasticSizingEndpoint, on
    histories filled first by untimed cycles a simulated minute apart,
    its INFO lines formatted and written to /dev/null as to a log file.
    Replaced, as they cannot run without Nova's services: the instance
    list (``InstanceList.get_by_host``: fresh Instance objects each cycle,
    built in the timed cycle as the conductor's answer would be), the
    ``pci_requests`` each guest lazy-loads
    (``compatibility.instance_conflicts``: a conductor round trip each in
    production, counted here; its latency is in no figure), placement's
    two GETs (answered in process, through ``placement.free_room``'s own
    code), and the three driver calls (a domain lookup by uuid as
    XloudLibvirtDriver's; the host's memory and node, which the test
    driver does not report).

The guests are libvirt's own test driver's domains, defined from a
Nova-like domain XML (metadata, sysinfo, PCIe controllers, disk, port,
consoles, guest agent channel, balloon with statistics: about 6 KB, as
``read_pressure`` parses it whole): real libvirt API calls, real XML
formatting and parsing and real statistics dictionaries, which Nova's
Python fake libvirt (tests/nova/fakelibvirt.py) would only imitate. Two
ways to reach them: in this process (``test:///default``: the library's,
the binding's and the test driver's cost, no RPC), and through a private
libvirtd (tests/realguest/daemon.py, ``test+unix://``) as nova-compute
reaches ``qemu:///system``: every call a round trip on a UNIX socket, the
daemon's CPU read from ``/proc`` and shown apart. Neither includes what
QEMU's monitor adds to ``memoryStats`` on a real host (wall time in
libvirtd, not nova-compute's CPU). The test driver stamps its statistics
``last_update`` 627319920 (1989): the balloon's statistics period in the
XML is long enough that they count as current, so every sample carries
them and the engine takes its full path.

    PYTHONPATH=. .venv/bin/python bench/autopilot_cycle.py \
        [--sizes 50 500] [--cycles 5] [--limit-percent 5]

Exits 1 when a whole cycle (with libvirtd's CPU) takes more than
``--limit-percent`` of one core at the default interval.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from unittest import mock

import libvirt
from nova import context as nova_context
from nova import objects
from nova.compute import vm_states

from nova_ext import autopilot, conf, placement, sizing
from nova_ext.compute import autopilot as compute_autopilot
from nova_ext.compute import endpoint as compute_endpoint
from nova_ext.virt import live
from tests.realguest import daemon

CONF = conf.CONF
KIB_PER_MIB = 1024
HOST = 'bench-compute'
NODE = str(uuid.UUID(int=1))
FLAVOR = {'flavorid': 'elastic.medium', 'name': 'elastic.medium',
          'vcpus': 4, 'memory_mb': 4096, 'root_gb': 20,
          'extra_specs': {sizing.MINIMUM_CPU: '2',
                          sizing.MINIMUM_MEMORY: '2048',
                          sizing.AUTOSIZE: 'memory,cpu'}}
# What nova-compute recorded of the domains below (3 vCPUs, 3072 MiB).
RECORD = {sizing.SYSMETA_FLAVOR: FLAVOR['flavorid'],
          sizing.SYSMETA_LIVE_VCPUS: '3', sizing.SYSMETA_LIVE_MEMORY: '3072',
          sizing.SYSMETA_BOOT_VCPUS: '3', sizing.SYSMETA_BOOT_MEMORY: '3072'}
HOST_MEMORY_MB = 512 * 1024
HOST_FREE_MB = 128 * 1024
# 2 * period must reach back to the test driver's fixed last_update.
STATS_PERIOD = 10 ** 9

DOMAIN_XML = """<domain type='test'>
  <name>instance-{index:08x}</name>
  <uuid>{uuid}</uuid>
  <metadata>
  <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
    <nova:package version="34.0.0"/>
    <nova:name>bench-{index}</nova:name>
    <nova:creationTime>2026-12-07 12:00:00</nova:creationTime>
    <nova:flavor name="elastic.medium">
      <nova:memory>4096</nova:memory>
      <nova:disk>20</nova:disk>
      <nova:swap>0</nova:swap>
      <nova:ephemeral>0</nova:ephemeral>
      <nova:vcpus>4</nova:vcpus>
    </nova:flavor>
    <nova:owner>
      <nova:user uuid="0f6b8d9e2d1c4a3b9e8f7a6b5c4d3e2f">admin</nova:user>
      <nova:project uuid="1a2b3c4d5e6f47089a0b1c2d3e4f5a6b">demo</nova:project>
    </nova:owner>
    <nova:root type="image" uuid="5e1f8c3a-9b7d-4e2f-8a6c-1d3b5f7e9a0c"/>
    <nova:ports>
      <nova:port uuid="{port}">
        <nova:ip type="fixed" address="10.0.{subnet}.{host}" ipVersion="4"/>
      </nova:port>
    </nova:ports>
  </nova:instance>
  </metadata>
  <memory unit='KiB'>4194304</memory>
  <currentMemory unit='KiB'>3145728</currentMemory>
  <vcpu placement='static' current='3'>4</vcpu>
  <cputune><shares>4096</shares></cputune>
  <sysinfo type='smbios'>
    <system>
      <entry name='manufacturer'>OpenStack Foundation</entry>
      <entry name='product'>OpenStack Nova</entry>
      <entry name='version'>34.0.0</entry>
      <entry name='serial'>{uuid}</entry>
      <entry name='uuid'>{uuid}</entry>
      <entry name='family'>Virtual Machine</entry>
    </system>
  </sysinfo>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <boot dev='hd'/>
    <smbios mode='sysinfo'/>
  </os>
  <features><acpi/><apic/><vmcoreinfo state='on'/></features>
  <cpu mode='host-model' check='partial'>
    <topology sockets='4' dies='1' cores='1' threads='1'/>
  </cpu>
  <clock offset='utc'>
    <timer name='pit' tickpolicy='delay'/>
    <timer name='rtc' tickpolicy='catchup'/>
    <timer name='hpet' present='no'/>
  </clock>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='/var/lib/nova/instances/{uuid}/disk'/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x03' slot='0x00'
               function='0x0'/>
    </disk>
    <controller type='usb' index='0' model='qemu-xhci'>
      <address type='pci' domain='0x0000' bus='0x02' slot='0x00'
               function='0x0'/>
    </controller>
    <controller type='pci' index='0' model='pcie-root'/>
    <controller type='pci' index='1' model='pcie-root-port'>
      <model name='pcie-root-port'/>
      <target chassis='1' port='0x10'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02'
               function='0x0' multifunction='on'/>
    </controller>
    <controller type='pci' index='2' model='pcie-root-port'>
      <model name='pcie-root-port'/>
      <target chassis='2' port='0x11'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02'
               function='0x1'/>
    </controller>
    <controller type='pci' index='3' model='pcie-root-port'>
      <model name='pcie-root-port'/>
      <target chassis='3' port='0x12'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02'
               function='0x2'/>
    </controller>
    <controller type='pci' index='4' model='pcie-root-port'>
      <model name='pcie-root-port'/>
      <target chassis='4' port='0x13'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02'
               function='0x3'/>
    </controller>
    <controller type='sata' index='0'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x1f'
               function='0x2'/>
    </controller>
    <interface type='bridge'>
      <mac address='fa:16:3e:00:{mac}'/>
      <source bridge='br-int'/>
      <virtualport type='openvswitch'>
        <parameters interfaceid='{port}'/>
      </virtualport>
      <target dev='tap{tap}'/>
      <model type='virtio'/>
      <mtu size='1442'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00'
               function='0x0'/>
    </interface>
    <serial type='pty'>
      <log file='/var/lib/nova/instances/{uuid}/console.log' append='off'/>
      <target type='isa-serial' port='0'><model name='isa-serial'/></target>
    </serial>
    <console type='pty'>
      <log file='/var/lib/nova/instances/{uuid}/console.log' append='off'/>
      <target type='serial' port='0'/>
    </console>
    <channel type='unix'>
      <source mode='bind'
       path='/var/lib/libvirt/qemu/org.qemu.guest_agent.0.{index:08x}.sock'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
      <address type='virtio-serial' controller='0' bus='0' port='1'/>
    </channel>
    <input type='tablet' bus='usb'><address type='usb' bus='0' port='1'/>
    </input>
    <input type='mouse' bus='ps2'/>
    <input type='keyboard' bus='ps2'/>
    <graphics type='vnc' port='-1' autoport='yes' listen='0.0.0.0'>
      <listen type='address' address='0.0.0.0'/>
    </graphics>
    <video>
      <model type='virtio' heads='1' primary='yes'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01'
               function='0x0'/>
    </video>
    <memballoon model='virtio'>
      <stats period='{period}'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00'
               function='0x0'/>
    </memballoon>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
      <address type='pci' domain='0x0000' bus='0x05' slot='0x00'
               function='0x0'/>
    </rng>
  </devices>
</domain>"""


@dataclasses.dataclass(frozen=True)
class Cost:
    """Per cycle: medians over the timed cycles; ``daemon_cpu_ms``
    libvirtd's mean, when the guests are reached through it."""

    cpu_ms: float
    wall_ms: float
    daemon_cpu_ms: float | None = None


@dataclasses.dataclass(frozen=True)
class Row:
    part: str
    libvirt: str
    guests: int
    cost: Cost


class Backend:
    """Where the test driver's domains live: a name for the table, how to
    connect, and libvirtd's CPU time in seconds (None in process)."""

    def __init__(self, name: str, uri: str,
                 daemon_pid: int | None = None) -> None:
        self.name = name
        self.uri = uri
        self.daemon_pid = daemon_pid

    def daemon_cpu(self) -> float | None:
        if self.daemon_pid is None:
            return None
        with open(f'/proc/{self.daemon_pid}/stat') as stat:
            # After the command's closing parenthesis: utime and stime are
            # the 12th and 13th fields, all of the daemon's threads.
            fields = stat.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf(
            'SC_CLK_TCK')


def _domain_xml(index: int, instance_uuid: str) -> str:
    port = uuid.UUID(int=index + 1 << 64)
    return DOMAIN_XML.format(
        index=index, uuid=instance_uuid, port=port, tap=str(port)[:11],
        subnet=index // 250, host=index % 250 + 2,
        mac=f'{index >> 8 & 0xff:02x}:{index & 0xff:02x}',
        period=STATS_PERIOD)


@contextlib.contextmanager
def _domains(conn: libvirt.virConnect, count: int
             ) -> Iterator[list[libvirt.virDomain]]:
    domains = []
    try:
        for index in range(count):
            domain = conn.defineXML(_domain_xml(index, str(uuid.uuid4())))
            domains.append(domain)
            domain.create()
        yield domains
    finally:
        for domain in domains:
            with contextlib.suppress(libvirt.libvirtError):
                domain.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                domain.undefine()


def _timed(cycle: Callable[[], object], cycles: int,
           backend: Backend | None = None) -> Cost:
    cpu, wall = [], []
    daemon_before = backend.daemon_cpu() if backend else None
    for _cycle in range(cycles):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        cycle()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    # The kernel counts the daemon's CPU in clock ticks (10 ms): the mean
    # over all cycles, not a median of coarse figures.
    daemon_ms = None
    if daemon_before is not None:
        daemon_ms = (backend.daemon_cpu() - daemon_before) * 1000 / cycles
    return Cost(cpu_ms=statistics.median(cpu) * 1000,
                wall_ms=statistics.median(wall) * 1000,
                daemon_cpu_ms=daemon_ms)


def measure_sampling(domains: list[libvirt.virDomain], cycles: int,
                     backend: Backend) -> Cost:
    def cycle() -> None:
        for domain in domains:
            live.read_pressure(domain, 0.0)

    return _timed(cycle, cycles, backend)


class SyntheticGuest:
    """What one guest shows from cycle to cycle: its programs' memory use
    and busy vCPUs about a level of its own, with noise; cumulative
    counters that grow when it swaps."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.vcpus = rng.choice((2, 3, 4))
        self.memory_mb = rng.choice((2048, 3072, 4096))
        self.used_share = rng.choice((0.3, 0.45, 0.7, 0.9, 0.97))
        self.busy_share = rng.choice((0.1, 0.5, 0.95))
        self.swapping = rng.random() < 0.2
        self.major_faults = 0
        self.swap_in_kib = 0

    def sample(self, at: float, seconds: float) -> autopilot.Sample:
        used = self.memory_mb * min(
            self.used_share + self.rng.uniform(-0.03, 0.03), 0.99)
        if self.swapping:
            self.major_faults += int(200 * seconds)
            self.swap_in_kib += int(2048 * seconds)
        busy = self.vcpus * min(max(
            self.busy_share + self.rng.uniform(-0.05, 0.05), 0), 1)
        return autopilot.Sample(
            at=at, vcpus=self.vcpus, memory_mb=self.memory_mb,
            usable_mb=int(self.memory_mb - used),
            major_faults=self.major_faults, swap_in_kib=self.swap_in_kib,
            swap_out_kib=0, busy_vcpus=busy)


def measure_engine(count: int, cycles: int
                   ) -> tuple[Cost, dict[str, int]]:
    """The engine's cost per cycle, and what it decided in the last one."""
    params = autopilot.Params(mode=autopilot.MODE_RECOMMEND)
    spacing = params.window_seconds / params.max_samples
    rng = random.Random(17)
    bounds = autopilot.Bounds(floor_vcpus=2, max_vcpus=4,
                              floor_memory_mb=2048, max_memory_mb=4096)
    shown = [SyntheticGuest(rng) for _guest in range(count)]
    guests = [autopilot.Guest(uuid=str(uuid.UUID(int=index + 1)),
                              history=autopilot.GuestHistory.for_params(
                                  params),
                              bounds=bounds)
              for index in range(count)]
    now = 0.0
    for _sample in range(params.max_samples):
        now += spacing
        for guest, source in zip(guests, shown, strict=True):
            guest.history.add(source.sample(now, spacing))
    # Some changed recently, so the cooldowns are checked too.
    for guest in guests[::7]:
        guest.history.changed(autopilot.MEMORY, autopilot.GROW,
                              now - params.cooldown / 2)
    assert all(len(guest.history.samples) == params.max_samples
               for guest in guests)
    planned: list[tuple[str, autopilot.Decision]] = []

    def cycle() -> None:
        nonlocal now, planned
        now += spacing
        for guest, source in zip(guests, shown, strict=True):
            guest.history.add(source.sample(now, spacing))
        planned = autopilot.plan_host(
            guests, params, now, host_free_memory_mb=HOST_FREE_MB,
            host_memory_mb=HOST_MEMORY_MB,
            room={autopilot.VCPUS: count // 4,
                  autopilot.MEMORY: count * 256})

    cost = _timed(cycle, cycles)
    actions: dict[str, int] = {}
    for _uuid, decision in planned:
        actions[decision.action] = actions.get(decision.action, 0) + 1
    return cost, actions


class BenchDriver:
    """The driver calls the cycle makes, on the bench's connection."""

    def __init__(self, conn: libvirt.virConnect) -> None:
        self.conn = conn

    def elastic_domain_by_uuid(self, instance_uuid: str):
        try:
            return self.conn.lookupByUUIDString(instance_uuid)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def host_memory_mb(self) -> tuple[int, int]:
        return HOST_MEMORY_MB, HOST_FREE_MB

    def node_provider(self) -> str:
        return NODE


class PlacementAnswers:
    """Placement's answers to ``free_room``'s two GETs."""

    class Response:
        status_code = 200

        def __init__(self, body: dict) -> None:
            self._body = body

        def json(self) -> dict:
            return self._body

    def __init__(self, guests: int) -> None:
        self.calls = 0
        self.bodies = {
            'inventories': {'inventories': {
                placement.VCPU: {'total': 256, 'reserved': 0,
                                 'allocation_ratio': 4.0},
                placement.MEMORY_MB: {'total': HOST_MEMORY_MB,
                                      'reserved': 4096,
                                      'allocation_ratio': 1.0}}},
            'usages': {'usages': {placement.VCPU: 4 * guests,
                                  placement.MEMORY_MB: 4096 * guests}}}

    def get(self, path: str, **kwargs) -> Response:
        self.calls += 1
        return self.Response(self.bodies[path.rsplit('/', 1)[1]])


class CountingHandler(logging.FileHandler):
    """Writes every record to /dev/null as nova-compute's log file gets
    it, and counts them."""

    def __init__(self) -> None:
        super().__init__(os.devnull)
        self.setLevel(logging.INFO)
        self.setFormatter(logging.Formatter(
            '%(asctime)s %(process)d %(levelname)s %(name)s %(message)s'))
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        super().emit(record)


class NovaStandIns:
    """What the cycle asks of Nova's database and placement, answered in
    process and counted."""

    def __init__(self, uuids: list[str]) -> None:
        self.uuids = uuids
        self.placement = PlacementAnswers(len(uuids))
        self.lists = 0
        self.lazy_loads = 0

    def counts(self) -> tuple[int, int, int]:
        return self.lists, self.lazy_loads, self.placement.calls

    def get_by_host(self, context, host, expected_attrs=None):
        """New objects at each query, as from the conductor's answer:
        each with the record of the size its domain runs at, and its PCI
        requests when the query asks for them."""
        self.lists += 1
        loaded = {}
        if 'pci_requests' in (expected_attrs or ()):
            loaded['pci_requests'] = objects.InstancePCIRequests(requests=[])
        return objects.InstanceList(objects=[
            objects.Instance(context, uuid=instance_uuid, host=host,
                             vm_state=vm_states.ACTIVE, task_state=None,
                             project_id='1a2b3c4d5e6f47089a0b1c2d3e4f5a6b',
                             flavor=objects.Flavor(**{
                                 **FLAVOR,
                                 'extra_specs': dict(FLAVOR['extra_specs'])}),
                             system_metadata=dict(RECORD), **loaded)
            for instance_uuid in self.uuids])

    def pci_requests(self, context, instance_uuid):
        self.lazy_loads += 1
        return objects.InstancePCIRequests(instance_uuid=instance_uuid,
                                           requests=[])

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        with mock.patch.object(objects.InstanceList, 'get_by_host',
                               new=self.get_by_host), \
                mock.patch.object(objects.InstancePCIRequests,
                                  'get_by_instance_uuid',
                                  new=self.pci_requests), \
                mock.patch.object(placement.report,
                                  'report_client_singleton',
                                  new=lambda: self.placement):
            yield


def measure_run_once(conn: libvirt.virConnect,
                     domains: list[libvirt.virDomain], cycles: int,
                     backend: Backend,
                     say: Callable[[str], None]) -> tuple[Cost, dict]:
    """The whole cycle's cost, and what one cycle asked of Nova."""
    context = nova_context.get_admin_context()
    nova = NovaStandIns([domain.UUIDString() for domain in domains])
    clock_now = [time.monotonic()]
    endpoint = compute_endpoint.ElasticSizingEndpoint(BenchDriver(conn),
                                                      HOST)
    runner = compute_autopilot.AutopilotRunner(
        endpoint, clock=lambda: clock_now[0])
    params = autopilot.Params.from_conf(CONF)
    filled = min(params.max_samples,
                 int(params.window_seconds // params.interval) + 1)
    log = logging.getLogger(compute_autopilot.__name__)
    handler = CountingHandler()

    def cycle() -> list:
        clock_now[0] += params.interval
        return runner.run_once(context)

    with nova.installed(), _logging_to(log, handler):
        shown = time.monotonic()
        for done in range(1, filled + 1):
            made = cycle()
            if time.monotonic() - shown > 5 or done == filled:
                say(f'  filling histories: {done}/{filled} cycles')
                shown = time.monotonic()
        assert len(made) == 2 * len(domains), len(made)
        before, records = nova.counts(), handler.records
        made = cycle()
        asked = {name: after - was for name, after, was in zip(
            ('instance lists', 'pci_requests lazy-loads', 'placement GETs'),
            nova.counts(), before, strict=True)}
        asked['log lines'] = handler.records - records
        cost = _timed(cycle, cycles, backend)
    actions: dict[str, int] = {}
    for _uuid, decision in made:
        actions[decision.action] = actions.get(decision.action, 0) + 1
    return cost, {**asked, 'decisions': actions}


@contextlib.contextmanager
def _logging_to(log: logging.Logger, handler: logging.Handler
                ) -> Iterator[None]:
    """``log`` at INFO into ``handler`` only, as nova-compute logs."""
    level, propagate = log.level, log.propagate
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()
        log.setLevel(level)
        log.propagate = propagate


def _share(cpu_ms: float, interval: float) -> float:
    return cpu_ms / 1000 / interval * 100


def _table(rows: list[Row], interval: float) -> None:
    print(f'\nPer cycle, median of the timed cycles. share: CPU seconds per '
          f'{interval:g} s interval, % of one core; x: CPU against the same '
          f'part at {rows[0].guests} guests')
    print(f'{"part":<30} {"libvirt":<10} {"guests":>6} {"CPU ms":>8} '
          f'{"wall ms":>8} {"CPU us/guest":>12} {"share %":>8} {"x":>5} '
          f'{"libvirtd CPU ms":>15} {"share % with it":>15}')
    smallest: dict[tuple[str, str], Row] = {}
    for row in rows:
        base = smallest.setdefault((row.part, row.libvirt), row)
        ratio = (f'{row.cost.cpu_ms / base.cost.cpu_ms:5.1f}'
                 if row is not base else f'{"":>5}')
        daemon = row.cost.daemon_cpu_ms
        daemon_cells = (f'{daemon:15.1f} '
                        f'{_share(row.cost.cpu_ms + daemon, interval):15.3f}'
                        if daemon is not None else f'{"-":>15} {"-":>15}')
        print(f'{row.part:<30} {row.libvirt:<10} {row.guests:>6} '
              f'{row.cost.cpu_ms:8.1f} {row.cost.wall_ms:8.1f} '
              f'{row.cost.cpu_ms * 1000 / row.guests:12.0f} '
              f'{_share(row.cost.cpu_ms, interval):8.3f} {ratio} '
              f'{daemon_cells}')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[50, 500])
    parser.add_argument('--cycles', type=int, default=5,
                        help='timed cycles per measurement (median)')
    parser.add_argument('--limit-percent', type=float, default=5.0,
                        help='the most of one core a whole cycle may take')
    args = parser.parse_args()
    sizes = sorted(set(args.sizes))
    started = time.monotonic()

    def say(message: str) -> None:
        print(f'[{time.monotonic() - started:6.1f}s] {message}',
              file=sys.stderr, flush=True)

    objects.register_all()
    CONF.set_override('mode', autopilot.MODE_RECOMMEND,
                      group='xloud_autopilot')
    interval = autopilot.Params.from_conf(CONF).interval
    rows: list[Row] = []
    notes: list[str] = []
    for count in sizes:
        say(f'(b) decision engine, {count} guests')
        cost, actions = measure_engine(count, args.cycles)
        rows.append(Row('(b) GuestHistory.add+plan_host', '-', count, cost))
        notes.append(f'(b) {count} guests decided: {actions}')
    with contextlib.ExitStack() as stack:
        backends = [Backend('in-process', 'test:///default')]
        try:
            private = stack.enter_context(daemon.PrivateLibvirtd())
            backends.append(Backend(
                'libvirtd', f'test+unix:///default?socket='
                f'{private.socket_path}', daemon_pid=private.process.pid))
        except daemon.DaemonUnavailable as e:
            say(f'no private libvirtd, in process only: {e}')
        for backend in backends:
            conn = libvirt.open(backend.uri)
            stack.callback(conn.close)
            for count in sizes:
                say(f'{backend.name}: defining and starting {count} domains')
                with _domains(conn, count) as domains:
                    say(f'(a) sampling, {backend.name}, {count} guests')
                    rows.append(Row('(a) live.read_pressure', backend.name,
                                    count, measure_sampling(
                                        domains, args.cycles, backend)))
                    say(f'(c) run_once, {backend.name}, {count} guests')
                    cost, calls = measure_run_once(
                        conn, domains, args.cycles, backend, say)
                    rows.append(Row('(c) AutopilotRunner.run_once',
                                    backend.name, count, cost))
                    notes.append(f'(c) {backend.name} {count} guests, one '
                                 f'cycle: {calls}')
    rows.sort(key=lambda row: (row.part, row.libvirt, row.guests))
    _table(rows, interval)
    for note in notes:
        print(note)
    whole = [row for row in rows if row.part.startswith('(c)')]
    worst = max(whole, key=lambda row: row.cost.cpu_ms + (
        row.cost.daemon_cpu_ms or 0))
    worst_share = _share(worst.cost.cpu_ms + (worst.cost.daemon_cpu_ms or 0),
                         interval)
    print(f'Largest whole cycle: {worst_share:.3f}% of one core '
          f'({worst.guests} guests, {worst.libvirt}, with libvirtd\'s CPU); '
          f'limit {args.limit_percent:g}%; run took '
          f'{time.monotonic() - started:.0f} s')
    return 0 if worst_share <= args.limit_percent else 1


if __name__ == '__main__':
    sys.exit(main())
