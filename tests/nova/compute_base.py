"""Nova's libvirt functional harness running the elastic compute driver.

Compute hosts load ``compute_driver = xloud.XloudLibvirtDriver`` through
the ``nova.virt.xloud`` shim, exactly as operators configure it, on Nova's
fake libvirt extended by :mod:`tests.nova.fakelibvirt`. Adjustments are
sent the way the API sends them: an ``xloud-adjust`` instance action
started for the request, then ``nova_ext.rpcapi`` over Nova's RPC.
"""

import time

from lxml import etree
from nova import context as nova_context
from nova import objects
from nova.tests.functional.libvirt import base

from nova_ext import rpcapi, sizing
from tests.nova import base as api_base
from tests.nova.fakelibvirt import ElasticLibvirtFixture

ACTION = 'xloud-adjust'
EVENT = 'compute_xloud_adjust'
MIB = 1024


class ElasticComputeMixin:
    """Runs compute hosts with XloudLibvirtDriver on the elastic fake."""

    def setUp(self) -> None:
        super().setUp()
        self.elastic_libvirt = self.useFixture(ElasticLibvirtFixture())

    def _setup_compute_service(self) -> None:
        self.flags(compute_driver='xloud.XloudLibvirtDriver')

    def _connection(self, hostname: str):
        return self.computes[hostname].driver._host.get_connection()

    def _domain(self, server: dict):
        return self._connection(server['OS-EXT-SRV-ATTR:host']) \
            .lookupByUUIDString(server['id'])

    def _domain_xml(self, server: dict, flags: int = 0) -> etree._Element:
        return etree.fromstring(self._domain(server).XMLDesc(flags))

    def _domain_size(self, server: dict,
                     flags: int = 0) -> tuple[int, int]:
        """vCPUs and MiB the domain runs at (or is defined with)."""
        xml = self._domain_xml(server, flags)
        vcpu = xml.find('vcpu')
        return (int(vcpu.get('current', vcpu.text)),
                int(xml.find('currentMemory').text) // MIB)

    def _instance(self, server_id: str) -> objects.Instance:
        ctxt = nova_context.get_admin_context()
        mapping = objects.InstanceMapping.get_by_instance_uuid(ctxt,
                                                               server_id)
        with nova_context.target_cell(ctxt, mapping.cell_mapping) as cctxt:
            return objects.Instance.get_by_uuid(
                cctxt, server_id, expected_attrs=['flavor',
                                                  'system_metadata'])

    def _elastic_size(self, server_id: str) -> sizing.ElasticSize:
        return sizing.ElasticSize.from_instance(self._instance(server_id))

    def _send_adjust(self, server: dict, vcpus: int | None = None,
                     memory_mb: int | None = None,
                     persist: bool = True) -> str:
        """Start the action and cast, as the API does; the request id."""
        ctxt = nova_context.get_admin_context()
        mapping = objects.InstanceMapping.get_by_instance_uuid(
            ctxt, server['id'])
        with nova_context.target_cell(ctxt, mapping.cell_mapping) as cctxt:
            instance = objects.Instance.get_by_uuid(
                cctxt, server['id'],
                expected_attrs=['flavor', 'system_metadata'])
            objects.InstanceAction.action_start(
                cctxt, instance.uuid, ACTION, want_result=False)
            rpcapi.ElasticSizingAPI().adjust(cctxt, instance, vcpus,
                                             memory_mb, persist)
        return ctxt.request_id

    def _adjust(self, server: dict, vcpus: int | None = None,
                memory_mb: int | None = None, persist: bool = True,
                result: str = 'Success') -> dict:
        """Adjust and wait for the event; the event as the API shows it."""
        request_id = self._send_adjust(server, vcpus, memory_mb, persist)
        return self._wait_for_adjust_event(server, request_id, result)

    def _wait_for_adjust_event(self, server: dict, request_id: str,
                               result: str) -> dict:
        for _attempt in range(100):
            action = self.api.api_get(
                f'/servers/{server["id"]}/os-instance-actions/'
                f'{request_id}').body['instanceAction']
            events = [e for e in action['events'] if e['event'] == EVENT]
            if events and events[0]['finish_time']:
                self.assertEqual(result, events[0]['result'], events[0])
                return events[0]
            time.sleep(0.05)
        self.fail(f'event {EVENT} of {request_id} did not finish')

    def _placement_size(self, server_id: str) -> tuple[int, int]:
        """VCPU and MEMORY_MB the server holds on its compute node."""
        allocations = self._get_allocations_by_server_uuid(server_id)
        host = self._instance(server_id).host
        resources = allocations[self.compute_rp_uuids[host]]['resources']
        return resources['VCPU'], resources['MEMORY_MB']


class ElasticComputeTestBase(ElasticComputeMixin, base.ServersTestBase):
    """The compute side alone, driven as the API drives it."""

    ADMIN_API = True
    microversion = '2.84'

    def setUp(self) -> None:
        # Nova's own pipeline, without the API filter: these tests send
        # what the API would send themselves.
        self.flags(api_paste_config=api_base.nova_sample_paste_config(),
                   group='wsgi')
        super().setUp()
