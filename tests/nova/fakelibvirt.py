"""Nova's fake libvirt, taught vCPU hotplug and memory ballooning.

``nova.tests.fixtures.libvirt.Domain`` keeps one definition, ignores the
``current`` attribute of ``<vcpu>`` and ``<currentMemory>``, and has no
``setVcpusFlags``, ``setMemoryFlags`` or ``vcpusFlags``. :class:`ElasticDomain`
adds them the way libvirt's QEMU driver behaves: a persistent definition and
a live state that starts from it, the same flag rules, and libvirt's own
error messages and codes. :class:`ElasticLibvirtFixture` installs it over
Nova's ``LibvirtFixture`` and offers hooks to make a guest misbehave as
real guests do.

Importable without pytest: the local cloud runs compute hosts with it.
"""

import dataclasses

import fixtures
from lxml import etree
from nova.tests.fixtures import libvirt as fakelibvirt

# Constants of libvirt-domain.h that Nova's fake module lacks.
MISSING_CONSTANTS = {
    'VIR_DOMAIN_VCPU_LIVE': 1,
    'VIR_DOMAIN_VCPU_CONFIG': 2,
    'VIR_DOMAIN_VCPU_MAXIMUM': 4,
    'VIR_DOMAIN_VCPU_GUEST': 8,
    'VIR_DOMAIN_MEM_LIVE': 1,
    'VIR_DOMAIN_MEM_CONFIG': 2,
    'VIR_DOMAIN_MEM_MAXIMUM': 4,
}
_LIVE = fakelibvirt.VIR_DOMAIN_AFFECT_LIVE
_CONFIG = fakelibvirt.VIR_DOMAIN_AFFECT_CONFIG
_MAXIMUM = MISSING_CONSTANTS['VIR_DOMAIN_VCPU_MAXIMUM']

_UNIT_KIB = {'b': 1 / 1024, 'bytes': 1 / 1024, 'k': 1, 'kib': 1,
             'kb': 1000 / 1024, 'm': 1024, 'mib': 1024,
             'g': 1024 ** 2, 'gib': 1024 ** 2}


@dataclasses.dataclass
class GuestBehaviour:
    """How the guest inside one domain answers live changes."""

    # No balloon driver (not loaded yet, or never): libvirt takes the
    # target, the balloon stays put. A guest starts with all of <memory>,
    # as QEMU gives it, and its balloon reaches <currentMemory> only once
    # the driver runs; setting this back to True is the driver loading.
    balloon_driver: bool = True
    # The guest does not release vCPUs: QEMU's unplug request times out.
    releases_vcpus: bool = True
    # libvirt refuses the next call of a method: {name: (message, code)}.
    refuse: dict = dataclasses.field(default_factory=dict)


def _error(message: str, code: int,
           domain: int = fakelibvirt.VIR_FROM_DOMAIN):
    return fakelibvirt.make_libvirtError(
        fakelibvirt.libvirtError, message, error_code=code,
        error_domain=domain)


def _invalid_arg(message: str):
    return _error(f'invalid argument: {message}',
                  fakelibvirt.VIR_ERR_INVALID_ARG)


def _not_running():
    return _error('Requested operation is not valid: domain is not running',
                  fakelibvirt.VIR_ERR_OPERATION_INVALID)


class ElasticDomain(fakelibvirt.Domain):
    """A fake domain with a current vCPU count and a balloon."""

    behaviour: GuestBehaviour
    # GuestBehaviour fields for domains defined from now on (a hard reboot
    # or a migration defines a new one): ElasticLibvirtFixture.new_guests.
    new_guest_behaviour: dict = {}

    def __init__(self, connection, xml, running=False, transient=False):
        self.behaviour = GuestBehaviour(**self.new_guest_behaviour)
        self._live = None
        super().__init__(connection, xml, running=running,
                         transient=transient)
        if running:
            self._start_live()

    def _parse_definition(self, xml):
        definition = super()._parse_definition(xml)
        tree = etree.fromstring(xml)
        maximum = definition['vcpu']['number']
        vcpu = tree.find('./vcpu')
        current = int(vcpu.get('current', maximum))
        if current > maximum:
            raise _error(
                f'XML error: maxvcpus must not be less than current vcpus '
                f'({maximum} < {current})', fakelibvirt.VIR_ERR_XML_ERROR)
        definition['vcpu']['current'] = current
        memory = definition['memory']
        node = tree.find('./currentMemory')
        current_memory = memory
        if node is not None:
            current_memory = int(
                int(node.text) * _UNIT_KIB[node.get('unit', 'KiB').lower()])
        # libvirt silently caps currentMemory at memory (and treats 0 as
        # unset): virDomainDefPostParseMemory.
        if not 0 < current_memory <= memory:
            current_memory = memory
        definition['current_memory'] = current_memory
        balloon = tree.find('./devices/memballoon')
        definition['balloon'] = (balloon is not None
                                 and balloon.get('model') != 'none')
        return definition

    def _start_live(self):
        # QEMU starts the guest with all of <memory>; <currentMemory> is
        # only the balloon's first target, reached through the guest's
        # driver (vCPUs, by contrast, are exact from the start).
        self._live = {'vcpus': self._def['vcpu']['current'],
                      'memory': self._def['memory'],
                      'balloon_target': self._def['current_memory']}

    def _live_memory(self) -> int:
        """What the guest holds: the balloon moves only with a driver."""
        if self._def['balloon'] and self.behaviour.balloon_driver:
            self._live['memory'] = self._live['balloon_target']
        return self._live['memory']

    def createWithFlags(self, flags):
        super().createWithFlags(flags)
        self._start_live()

    def destroy(self):
        super().destroy()
        self._live = None

    def shutdown(self):
        super().shutdown()
        self._live = None

    def managedSave(self, flags):
        super().managedSave(flags)
        self._live = None

    def _running(self) -> bool:
        return self._live is not None and self.isActive()

    def _affected(self, flags: int) -> tuple[bool, bool]:
        """Which of live and config a call changes (AFFECT_CURRENT = 0)."""
        live, config = bool(flags & _LIVE), bool(flags & _CONFIG)
        if not (live or config):
            live, config = self._running(), not self._running()
        if live and not self._running():
            raise _not_running()
        if config and self._transient:
            raise _error('Requested operation is not valid: transient '
                         'domains do not have any persistent config',
                         fakelibvirt.VIR_ERR_OPERATION_INVALID)
        return live, config

    def _refused(self, method: str) -> None:
        if method in self.behaviour.refuse:
            message, code = self.behaviour.refuse.pop(method)
            raise _error(message, code, fakelibvirt.VIR_FROM_QEMU)

    def setVcpusFlags(self, nvcpus, flags=0):
        self._refused('setVcpusFlags')
        if nvcpus == 0:
            raise _error('nvcpus in virDomainSetVcpusFlags must not be zero',
                         fakelibvirt.VIR_ERR_INVALID_ARG)
        if flags & _MAXIMUM:
            if flags & _LIVE or self._running() and not flags & _CONFIG:
                raise _error('Requested operation is not valid: cannot '
                             'change maximum vCPU count of a live domain',
                             fakelibvirt.VIR_ERR_OPERATION_INVALID)
            self._def['vcpu']['number'] = nvcpus
            self._def['vcpu']['current'] = min(
                self._def['vcpu']['current'], nvcpus)
            return 0
        live, config = self._affected(flags)
        maximum = self._def['vcpu']['number']
        if nvcpus > maximum:
            raise _invalid_arg(
                f'requested cpu amount exceeds maximum ({nvcpus} > '
                f'{maximum})')
        if live:
            if nvcpus < self._live['vcpus'] and (
                    not self.behaviour.releases_vcpus):
                raise _error(
                    'Timed out during operation: vcpu unplug request timed '
                    'out. Unplug result must be manually inspected in the '
                    'domain', fakelibvirt.VIR_ERR_OPERATION_TIMEOUT,
                    fakelibvirt.VIR_FROM_QEMU)
            self._live['vcpus'] = nvcpus
        if config:
            self._def['vcpu']['current'] = nvcpus
        return 0

    def vcpusFlags(self, flags=0):
        live, _config = self._affected(flags & (_LIVE | _CONFIG))
        if flags & _MAXIMUM:
            return self._def['vcpu']['number']
        return self._live['vcpus'] if live else self._def['vcpu']['current']

    def setMemoryFlags(self, memory, flags=0):
        self._refused('setMemoryFlags')
        if flags & _MAXIMUM:
            if flags & _LIVE or self._running() and not flags & _CONFIG:
                raise _error('Requested operation is not valid: cannot '
                             'resize the maximum memory on an active domain',
                             fakelibvirt.VIR_ERR_OPERATION_INVALID)
            self._def['memory'] = memory
            self._def['current_memory'] = min(self._def['current_memory'],
                                              memory)
            return 0
        live, config = self._affected(flags)
        if memory > self._def['memory']:
            raise _invalid_arg('cannot set memory higher than max memory')
        if live:
            if not self._def['balloon']:
                raise _error(
                    'Requested operation is not valid: Unable to change '
                    'memory of active domain without the balloon device '
                    'and guest OS balloon driver',
                    fakelibvirt.VIR_ERR_OPERATION_INVALID)
            self._live['balloon_target'] = memory
            self._live_memory()
        if config:
            self._def['current_memory'] = memory
        return 0

    def setMemory(self, memory):
        return self.setMemoryFlags(memory, _LIVE)

    def info(self):
        info = super().info()
        if self._running():
            info[2], info[3] = self._live_memory(), self._live['vcpus']
        else:
            info[2] = self._def['current_memory']
            info[3] = self._def['vcpu']['current']
        return info

    def memoryStats(self):
        if self._running() and self._def['balloon']:
            return {'actual': self._live_memory()}
        return {}

    def XMLDesc(self, flags):
        tree = etree.fromstring(super().XMLDesc(flags))
        if self._running() and not flags & (
                fakelibvirt.VIR_DOMAIN_XML_INACTIVE):
            vcpus, memory = self._live['vcpus'], self._live_memory()
        else:
            vcpus = self._def['vcpu']['current']
            memory = self._def['current_memory']
        # libvirt writes current only when it differs from the maximum.
        if vcpus != self._def['vcpu']['number']:
            tree.find('./vcpu').set('current', str(vcpus))
        tree.find('./currentMemory').text = str(memory)
        if not self._def['balloon']:
            tree.find('./devices/memballoon').set('model', 'none')
        return etree.tostring(tree, encoding='unicode')


class ElasticLibvirtFixture(fixtures.Fixture):
    """Installs ElasticDomain in Nova's fake libvirt.

    Use with (after) Nova's ``LibvirtFixture``; also points
    ``nova_ext.virt.live`` at the fake module, as ``LibvirtFixture`` does
    for Nova's own libvirt modules.
    """

    def _setUp(self) -> None:
        for name in ('Domain', 'virDomain'):
            self.useFixture(fixtures.MonkeyPatch(
                f'nova.tests.fixtures.libvirt.{name}', ElasticDomain))
        for name, value in MISSING_CONSTANTS.items():
            self.useFixture(fixtures.MonkeyPatch(
                f'nova.tests.fixtures.libvirt.{name}', value))
        self.useFixture(fixtures.MonkeyPatch(
            'nova_ext.virt.live.libvirt', fakelibvirt))

    def new_guests(self, **behaviour) -> None:
        """GuestBehaviour fields for every domain defined from now on."""
        self.useFixture(fixtures.MonkeyPatch(
            f'{__name__}.ElasticDomain.new_guest_behaviour', behaviour))

    @staticmethod
    def behaviour(connection, instance_uuid: str) -> GuestBehaviour:
        """The guest behaviour of an instance's domain, to change it."""
        return connection.lookupByUUIDString(instance_uuid).behaviour

    @staticmethod
    def refuse_next(connection, instance_uuid: str, method: str,
                    message: str,
                    code: int = fakelibvirt.VIR_ERR_INTERNAL_ERROR) -> None:
        """Make libvirt refuse the next ``method`` call on that domain."""
        domain = connection.lookupByUUIDString(instance_uuid)
        domain.behaviour.refuse[method] = (message, code)
