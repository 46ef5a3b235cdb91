"""Every lifecycle path of test_compute_lifecycle on virtio-mem guests.

The same operations on the same three variants (persisted, not persisted
grow, not persisted shrink), on a flavor with
``xloud:memory_model=virtio-mem``. Besides the sizes libvirt, the record
and placement report, every check also compares each domain's memory
layout with its flavor and record, in the live XML and in the persistent
definition:

* the guest's RAM is the flavor's minimum, on guest NUMA cell 0, with
  ``<maxMemory slots='1'>`` and ``<memory>`` the flavor's ``ram``;
* one virtio-mem device of ``ram`` less the minimum, whose
  ``<requested>`` is the record's live size less the RAM in the live XML
  (and plugged: ``<current>`` the same) and its boot size less the RAM in
  the persistent definition;
* a domain of a balloon flavor (a resize across memory models) has none
  of them.

After every step the audit compares the servers and finds nothing.

A domain that (re)starts is claimed, before it starts, what the guest can
use from its start: with virtio-mem its RAM and the blocks requested, not
all of ``<memory>`` as with the balloon.
"""

from lxml import etree
from nova import context as nova_context
from nova import objects

from nova_ext import audit, sizing
from tests.nova import compute_base
from tests.nova import test_compute_lifecycle as lifecycle

MIB = compute_base.MIB
INACTIVE = compute_base.INACTIVE

# Units libvirt writes memory in (KiB unless it says otherwise).
_UNIT_KIB = {'kib': 1, 'k': 1, 'mib': 1024, 'm': 1024, 'gib': 1024 ** 2,
             'g': 1024 ** 2}


def _kib(node: etree._Element | None, attribute: str | None = None
         ) -> int | None:
    if node is None:
        return None
    value = node.get(attribute) if attribute else node.text
    return int(value) * _UNIT_KIB[node.get('unit', 'KiB').lower()]


def memory_layout(xml: etree._Element) -> dict:
    """How a domain XML gives the guest its memory, in KiB, read from the
    XML alone."""
    max_memory = xml.find('maxMemory')
    devices = xml.findall("./devices/memory[@model='virtio-mem']")
    layout = {
        'memory': _kib(xml.find('memory')),
        'maxMemory': (None if max_memory is None else
                      (_kib(max_memory), max_memory.get('slots'))),
        'cells': [(cell.get('id'), _kib(cell, 'memory'))
                  for cell in xml.findall('./cpu/numa/cell')],
        'devices': [],
    }
    for device in devices:
        target = device.find('target')
        layout['devices'].append({
            'size': _kib(target.find('size')),
            'node': target.findtext('node'),
            'requested': _kib(target.find('requested')),
            'current': _kib(target.find('current')),
        })
    return layout


def expected_layout(flavor, memory_mb: int, live: bool) -> dict:
    """The layout a domain of ``flavor`` holding ``memory_mb`` has."""
    ram_kib = flavor.memory_mb * MIB
    if flavor.extra_specs.get(sizing.MEMORY_MODEL) != (
            sizing.MEMORY_MODEL_VIRTIO_MEM):
        return {'memory': ram_kib, 'maxMemory': None, 'cells': [],
                'devices': []}
    base_mb = int(flavor.extra_specs['xloud:minimum_memory'])
    requested_kib = (memory_mb - base_mb) * MIB
    return {
        'memory': ram_kib,
        'maxMemory': (ram_kib, '1'),
        'cells': [('0', base_mb * MIB)],
        'devices': [{'size': ram_kib - base_mb * MIB, 'node': '0',
                     'requested': requested_kib,
                     'current': requested_kib if live else None}],
    }


class VirtioMemLifecycleMixin:
    """Virtio-mem flavors, and the layout and audit checks, for the
    lifecycle tests."""

    def setUp(self) -> None:
        super().setUp()
        # A shrink waits for statistics sent after the last change: once
        # a second, for the guests booted from now on.
        self.flags(mem_stats_period_seconds=1, group='libvirt')

    def _adjusted(self, server_ids: list[str]) -> None:
        for server_id in server_ids:
            self._wait_for_statistics(server_id)

    def _create_elastic_flavor(
            self, vcpus: int = 4, memory_mb: int = 4096,
            minimum_cpu: int = 2, minimum_memory: int = 2048,
            memory_model: str = sizing.MEMORY_MODEL_VIRTIO_MEM) -> str:
        return self._create_flavor(
            vcpu=vcpus, memory_mb=memory_mb,
            extra_spec={'xloud:minimum_cpu': str(minimum_cpu),
                        'xloud:minimum_memory': str(minimum_memory),
                        sizing.MEMORY_MODEL: memory_model})

    def _domain_size(self, server: dict,
                     flags: int = 0) -> tuple[int, int]:
        # A persistent definition with a virtio-mem device starts with
        # its RAM and the blocks requested; its <currentMemory> is not
        # what it starts with.
        xml = self._domain_xml(server, flags)
        layout = memory_layout(xml)
        if not (flags & INACTIVE and layout['devices']):
            return super()._domain_size(server, flags)
        vcpu = xml.find('vcpu')
        starts_kib = sum(memory for _cell, memory in layout['cells']) + sum(
            device['requested'] for device in layout['devices'])
        return int(vcpu.get('current', vcpu.text)), starts_kib // MIB

    def _observed_sizes(self, server_id: str) -> dict:
        observed = super()._observed_sizes(server_id)
        if observed['domain'] == 'not running':
            return observed
        domain = self._connection(observed['host']).lookupByUUIDString(
            server_id)
        flavor = self._instance(server_id).flavor
        observed['memory layout'] = {
            'live': memory_layout(etree.fromstring(domain.XMLDesc(0))),
            'persistent': memory_layout(etree.fromstring(
                domain.XMLDesc(INACTIVE))),
        }
        observed['memory layout of the record'] = {
            'live': expected_layout(flavor, observed['record live'][1],
                                    live=True),
            'persistent': expected_layout(flavor, observed['record boot'][1],
                                          live=False),
        }
        return observed

    def _size_mismatches(self, observed: dict, live, boot,
                         providers=None) -> list[str]:
        mismatches = super()._size_mismatches(observed, live, boot,
                                              providers)
        if 'memory layout' in observed:
            for xml in ('live', 'persistent'):
                found = observed['memory layout'][xml]
                wanted = observed['memory layout of the record'][xml]
                if found != wanted:
                    mismatches.append(f'{xml} memory layout {found} != '
                                      f'{wanted}')
        return mismatches

    def _step(self, servers, operation: str, run, live, boot=None,
              providers=None) -> None:
        super()._step(servers, operation, run, live, boot, providers)
        report = audit.run(nova_context.get_admin_context(),
                           instance_uuids=list(servers.values()))
        unseen = [server_id for server_id in servers.values()
                  if server_id not in report.instances]
        if report.findings or report.skipped or report.errors or unseen:
            self.failures.append(
                f'{operation}: the audit found '
                f'{[finding.to_dict() for finding in report.findings]}, '
                f'skipped {[skipped.to_dict() for skipped in report.skipped]}'
                f', failed with {report.errors}, did not see {unseen}')


class VirtioMemSameHostTest(VirtioMemLifecycleMixin, lifecycle.SameHostTest):
    """Operations that keep the guest on its host."""


class VirtioMemMoveTest(VirtioMemLifecycleMixin, lifecycle.MoveTest):
    """Moves, and resizes to other virtio-mem flavors and across memory
    models."""

    def test_resizes_across_memory_models(self) -> None:
        servers = self._boot_variants()
        # The same sizes, so that each variant fits either flavor.
        balloon = self._create_elastic_flavor(
            memory_model=sizing.MEMORY_MODEL_BALLOON)
        virtio_mem = self._create_elastic_flavor()

        def at_flavor_minimum(variant):
            return lifecycle.FLAVOR_SIZE

        def resize_revert():
            self._act(servers, {'resize': {'flavorRef': balloon}},
                      'VERIFY_RESIZE')
            self._check_variants(servers, 'resized to balloon',
                                 at_flavor_minimum, at_flavor_minimum)
            self._act(servers, {'revertResize': None}, 'ACTIVE')
            self._wait_for_migrations(servers, 'reverted')
            self._wait_for_task_end(servers, 'ACTIVE')

        self._step(servers, 'resize to balloon + revert', resize_revert,
                   lifecycle.at_boot_size, providers=['compute1'])

        def resize_confirm(flavor):
            self._act(servers, {'resize': {'flavorRef': flavor}},
                      'VERIFY_RESIZE')
            self._act(servers, {'confirmResize': None}, 'ACTIVE')

        self._step(servers, 'resize to balloon + confirm',
                   lambda: resize_confirm(balloon), at_flavor_minimum,
                   at_flavor_minimum, providers=['compute2'])
        self._step(servers, 'resize to virtio-mem + confirm',
                   lambda: resize_confirm(virtio_mem), at_flavor_minimum,
                   at_flavor_minimum, providers=['compute1'])
        self._report_failures()


class VirtioMemStartClaimTest(VirtioMemLifecycleMixin,
                              compute_base.ElasticAPIComputeTestBase):
    """A (re)start claims what the guest starts with, and no more."""

    # A refused restart must end in the compute's fault.
    CAST_AS_CALL = False

    def _latest_fault(self, server_id: str):
        ctxt = nova_context.get_admin_context()
        mapping = objects.InstanceMapping.get_by_instance_uuid(ctxt,
                                                               server_id)
        with nova_context.target_cell(ctxt, mapping.cell_mapping) as cctxt:
            return objects.InstanceFault.get_latest_for_instance(
                cctxt, server_id)

    def test_restarts_on_a_host_with_room_for_the_boot_size_only(self):
        self.start_compute('compute1')
        flavor = self._create_elastic_flavor()
        server_id = self._create_server(
            image_uuid=lifecycle.IMAGE, flavor_id=flavor,
            networks='none')['id']
        self._adjust_through_api(server_id, 3, 3072, persist=True)
        # Room for exactly what is allocated: 3072 of the flavor's 4096 MiB.
        self._set_provider_capacity(
            'compute1', 'MEMORY_MB',
            self._provider_usage('compute1')['MEMORY_MB'])
        for operation, action, status in (
                ('hard reboot', {'reboot': {'type': 'HARD'}}, 'ACTIVE'),
                ('soft reboot', {'reboot': {'type': 'SOFT'}}, 'ACTIVE'),
                ('stop', {'os-stop': None}, 'SHUTOFF'),
                ('start', {'os-start': None}, 'ACTIVE')):
            resp = self._request_server_action(server_id, action)
            self.assertEqual(202, resp.status_code, resp.text)
            self._wait_for_server_parameter(
                {'id': server_id},
                {'status': status, 'OS-EXT-STS:task_state': None})
            fault = self._latest_fault(server_id)
            self.assertIsNone(fault, f'{operation}: {fault and fault.message}')
        self._assert_sizes({'restarted': (server_id, (3, 3072), (3, 3072),
                                          None)})
        self.assertEqual(self._provider_capacity('compute1')['MEMORY_MB'],
                         self._provider_usage('compute1')['MEMORY_MB'])
