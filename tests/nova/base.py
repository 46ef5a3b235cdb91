"""Nova's own functional harness with this extension installed.

The API runs the compute pipeline of the ``api-paste.ini`` that the nova
wheel ships, with the ``xloud_adjust`` filter placed after
``keystonecontext`` by the same code as ``xloud-nova-ext install --role
api``, so every request goes through the real paste loading path,
authentication stubs included.
"""

import os
import sys
import typing

import fixtures
import oslo_messaging
from nova import context as nova_context
from nova import objects
from nova import policy as nova_policy
from nova.tests.functional.libvirt import base
from oslo_serialization import jsonutils

from nova_ext import exception as xloud_exception
from nova_ext import sizing
from nova_ext.deploy import paste_ini


def nova_sample_paste_config() -> str:
    """The api-paste.ini installed by the nova wheel under <venv>/etc."""
    return os.path.join(sys.prefix, 'etc', 'nova', 'api-paste.ini')


def write_paste_config(directory: str) -> str:
    """Nova's sample api-paste.ini, edited by ``xloud-nova-ext install``."""
    source = nova_sample_paste_config()
    with open(source) as f:
        text = paste_ini.add_filter(source, f.read())
    path = os.path.join(directory, 'api-paste.ini')
    with open(path, 'w') as f:
        f.write(text)
    return path


class ElasticServersTestBase(base.ServersTestBase):
    """ServersTestBase with the elastic sizing API filter loaded."""

    ADMIN_API = True

    def setUp(self) -> None:
        paste_dir = self.useFixture(fixtures.TempDir()).path
        self.flags(api_paste_config=write_paste_config(paste_dir),
                   group='wsgi')
        super().setUp()


class SentRPCMessage(typing.NamedTuple):
    """One message nova-api handed to oslo.messaging."""

    kind: str
    topic: str
    server: str | None
    namespace: str | None
    version: str | None
    method: str
    kwargs: dict
    timeout: float | None


class _RecordingCallContext:
    def __init__(self, call_context, sent: list[SentRPCMessage]) -> None:
        self._call_context = call_context
        self._sent = sent

    def _record(self, kind: str, method: str, kwargs: dict) -> None:
        target = self._call_context.target
        self._sent.append(SentRPCMessage(
            kind, target.topic, target.server, target.namespace,
            target.version, method, dict(kwargs),
            self._call_context.timeout))

    def cast(self, ctxt, method, **kwargs):
        self._record('cast', method, kwargs)
        return self._call_context.cast(ctxt, method, **kwargs)

    def call(self, ctxt, method, **kwargs):
        self._record('call', method, kwargs)
        return self._call_context.call(ctxt, method, **kwargs)

    def __getattr__(self, name):
        return getattr(self._call_context, name)


class SentRPCMessages(fixtures.Fixture):
    """Records the messages sent in one RPC namespace at the oslo.messaging
    boundary (``RPCClient.prepare``), then sends them on unchanged."""

    def __init__(self, namespace: str) -> None:
        super().__init__()
        self.namespace = namespace

    def _setUp(self) -> None:
        self.sent: list[SentRPCMessage] = []
        real_prepare = oslo_messaging.RPCClient.prepare

        def prepare(client, *args, **kwargs):
            call_context = real_prepare(client, *args, **kwargs)
            if call_context.target.namespace != self.namespace:
                return call_context
            return _RecordingCallContext(call_context, self.sent)

        self.useFixture(fixtures.MonkeyPatch(
            'oslo_messaging.RPCClient.prepare', prepare))


class XloudEndpointDouble:
    """Stands in for nova_ext.compute.endpoint on a harness compute's RPC
    server: records what arrives, answers get_live_size, and takes an
    adjustment as the real endpoint does, ending it at once without
    touching the guest (``refuse`` refuses it instead)."""

    target = oslo_messaging.Target(namespace='xloud', version='2.1')

    def __init__(self, live_size: dict | None = None) -> None:
        self.live_size = live_size
        # What describe_guests answers beside the live size (GUEST of
        # nova_ext.compute.endpoint.describe_guests).
        self.guest_state = guest_state()
        self.refuse: str | None = None
        self.received: list[tuple[str, str, dict]] = []

    def start_adjust(self, context, instance, vcpus, memory_mb, persist,
                     not_after):
        instance.refresh()
        self.received.append(('start_adjust', instance.uuid, {
            'vcpus': vcpus, 'memory_mb': memory_mb, 'persist': persist,
            'request_id': context.request_id,
            'task_state': instance.task_state}))
        if self.refuse is not None:
            raise xloud_exception.AdjustmentRefused(reason=self.refuse)
        instance.task_state = None
        instance.save(expected_task_state=[sizing.ADJUSTING_TASK_STATE])

    def get_live_size(self, context, instance):
        self.received.append(('get_live_size', instance.uuid, {}))
        return self.live_size

    def describe_guests(self, context, instance_uuids):
        answers = {}
        for uuid in instance_uuids:
            self.received.append(('describe_guests', uuid, {}))
            answers[uuid] = {**self.guest_state, 'size': self.live_size}
        return answers


def guest_state(**changes) -> dict:
    """A running guest as describe_guests reports it: balloon statistics
    flowing, agent answering, hot-pluggable vCPUs, not yet measured."""
    state = {
        'size': {'vcpus': 2, 'memory_mb': 2048},
        'guest': {'agent': 'answering', 'online_vcpus': 2,
                  'available_memory_mb': 4000, 'usable_memory_mb': 1536,
                  'agent_error': None},
        'balloon_device': True, 'stats_period': 10, 'stats_fresh': True,
        'hotpluggable_vcpus': 3, 'machine_type': 'pc-q35-7.2',
        'cpu_time_ns': 5_000_000_000, 'busy': None,
        'as_of': '2026-12-03T18:00:00Z',
    }
    state.update(changes)
    return state


def serve_endpoint(test: ElasticServersTestBase, hostname: str,
                   endpoint: object) -> None:
    """Add ``endpoint`` to the RPC server of a started harness compute."""
    endpoints = test.computes[hostname].rpcserver.dispatcher.endpoints
    endpoints.append(endpoint)
    test.addCleanup(endpoints.remove, endpoint)


class ElasticAPITestBase(ElasticServersTestBase):
    """Helpers for the os-xloud-adjust API tests: an elastic flavor, a
    server on it, and the instance's record read straight from its cell."""

    FLAVOR_VCPUS = 4
    FLAVOR_MEMORY_MB = 4096
    MINIMUM_CPU = 2
    MINIMUM_MEMORY = 2048

    def setUp(self) -> None:
        super().setUp()
        self.rpc = self.useFixture(SentRPCMessages('xloud'))

    def _create_elastic_flavor(self, **extra_spec) -> str:
        # Guests claim their minimum in placement at boot (resources:*),
        # as the elastic driver's allocations follow the live size.
        specs = {'minimum_cpu': str(self.MINIMUM_CPU),
                 'minimum_memory': str(self.MINIMUM_MEMORY),
                 'resources:VCPU': str(self.MINIMUM_CPU),
                 'resources:MEMORY_MB': str(self.MINIMUM_MEMORY)}
        specs.update(extra_spec)
        return self._create_flavor(vcpu=self.FLAVOR_VCPUS,
                                   memory_mb=self.FLAVOR_MEMORY_MB,
                                   extra_spec=specs)

    def _instance(self, server_id: str):
        """The instance as its cell database holds it."""
        ctxt = nova_context.get_admin_context()
        mapping = objects.InstanceMapping.get_by_instance_uuid(ctxt,
                                                               server_id)
        with nova_context.target_cell(ctxt, mapping.cell_mapping) as cctxt:
            return objects.Instance.get_by_uuid(
                cctxt, server_id, expected_attrs=['system_metadata'])

    def _set_states(self, server_id: str, vm_state: str,
                    task_state: str | None) -> None:
        """Put an instance in a state as Nova's own operations would."""
        ctxt = nova_context.get_admin_context()
        mapping = objects.InstanceMapping.get_by_instance_uuid(ctxt,
                                                               server_id)
        with nova_context.target_cell(ctxt, mapping.cell_mapping) as cctxt:
            instance = objects.Instance.get_by_uuid(cctxt, server_id)
            instance.vm_state = vm_state
            instance.task_state = task_state
            instance.save()

    def _snapshot(self, server_id: str) -> dict:
        """Everything an adjustment request may change."""
        instance = self._instance(server_id)
        return {
            'xloud_sysmeta': {key: value for key, value
                              in instance.system_metadata.items()
                              if key.startswith('xloud_')},
            'vm_state': instance.vm_state,
            'task_state': instance.task_state,
            'flavor': instance.flavor.flavorid,
            'actions': [(action['action'], action['request_id'])
                        for action in self.admin_api.get_instance_actions(
                            server_id)],
            'rpc_sent': len(self.rpc.sent),
            # Resources only: a claim released again bumps the generation.
            'allocations': {
                rp_uuid: allocation['resources']
                for rp_uuid, allocation in
                self._get_allocations_by_server_uuid(server_id).items()},
        }

    def _allocated(self, server_id: str, hostname: str) -> tuple[int, int]:
        """VCPU and MEMORY_MB the server holds on ``hostname``."""
        resources = self._get_allocations_by_server_uuid(server_id)[
            self.compute_rp_uuids[hostname]]['resources']
        return resources['VCPU'], resources['MEMORY_MB']

    def _limit_memory_capacity(self, hostname: str, capacity_mb: int) -> None:
        """Leave room for ``capacity_mb`` of guest memory on the host."""
        rp_uuid = self.compute_rp_uuids[hostname]
        inventory = self.placement.get(
            f'/resource_providers/{rp_uuid}/inventories/MEMORY_MB',
            version='1.26').body
        inventory.update(reserved=inventory['total'] - capacity_mb,
                         allocation_ratio=1.0)
        self.placement.put(
            f'/resource_providers/{rp_uuid}/inventories/MEMORY_MB',
            inventory, version='1.26')

    def _post_adjust(self, server_id: str, body, api=None,
                     raw: bool = False, headers: dict | None = None):
        """POST /os-xloud-adjust/{server_id}; returns the raw response."""
        api = api or self.admin_api
        data = body if raw else jsonutils.dumps(body)
        request_headers = {'Content-Type': 'application/json'}
        request_headers.update(headers or {})
        return api.api_request(f'/os-xloud-adjust/{server_id}',
                               method='POST', body=data,
                               headers=request_headers)

    def _enforce_new_defaults(self) -> None:
        """Evaluate policies as a deployment does by default.

        Nova's harness turns ``enforce_new_defaults`` off, so the
        deprecated "any role in the project" defaults apply there.
        """
        self.flags(enforce_new_defaults=True, group='oslo_policy')
        nova_policy.reset()

    def _write_policy(self, rules: dict[str, str]) -> None:
        """Use a policy.yaml with ``rules`` from the next request on."""
        directory = self.useFixture(fixtures.TempDir()).path
        path = os.path.join(directory, 'policy.yaml')
        with open(path, 'w') as f:
            f.write(jsonutils.dumps(rules))
        self.flags(policy_file=path, group='oslo_policy')
        nova_policy.reset()
