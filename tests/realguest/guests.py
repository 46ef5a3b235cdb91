"""Booting tiny guests at their flavor's minimum on the private libvirtd."""

import dataclasses
import pathlib
import shutil
import subprocess

import libvirt
import pytest
from lxml import etree
from nova import context as nova_context
from nova import objects
from oslo_utils import uuidutils

from deploy.localcloud import guestimage as images
from nova_ext import sizing
from nova_ext.virt import guest_config as elastic_guest_config
from nova_ext.virt import live
from tests.realguest import console, domain

# One flavor for every guest: small enough for TCG on a shared 2-core
# machine, large enough to balloon by hundreds of MiB.
FLAVOR_VCPUS = 4
FLAVOR_MEMORY_MB = 1024
MINIMUM_CPU = 1
MINIMUM_MEMORY_MB = 512
# The guest without a balloon driver boots as a regeneration after a
# persisted grow to this many vCPUs does: all of them present at boot.
GROWN_VCPUS = 3

# What the memory-method guests write to their tmpfs once they can use this
# much memory (KiB), which only a grow to the flavor's maximum gives them
# (guestimage.VIRTIO_MEM_FILL).
FILL_AT_KIB = 800 * 1024
# Touched and released: QEMU holds it until a shrink gives it back.
TOUCH_MB = 384
# Kept: more than the minimum leaves free, so no shrink can complete.
HOLD_MB = 700

# The tools the tests run; tools/setup.sh installs their packages.
REQUIRED_COMMANDS = {
    'qemu-system-x86_64': 'qemu-system-x86',
    'libvirtd': 'libvirt-daemon-system',
    'busybox': 'busybox-static',
    'cpio': 'cpio',
    'modinfo': 'kmod',
    'apt-get': 'apt',
    'dpkg-deb': 'dpkg',
    'setpriv': 'util-linux',
}


def missing_requirements() -> list[str]:
    """What this machine lacks to boot a real guest, in words."""
    missing = [f'{command} (Debian package {package})'
               for command, package in REQUIRED_COMMANDS.items()
               if shutil.which(command) is None]
    if shutil.which('qemu-system-x86_64') and not _qemu_runs():
        missing.append('a working qemu-system-x86_64')
    return missing


def skip_module_without_qemu() -> None:
    """Skip the calling test module, saying why, where no guest can boot."""
    missing = missing_requirements()
    if missing:
        pytest.skip('real-guest tests need QEMU and libvirt; missing: '
                    + ', '.join(missing)
                    + ' (tools/setup.sh installs them as root)',
                    allow_module_level=True)


def _qemu_runs() -> bool:
    try:
        subprocess.run(['qemu-system-x86_64', '--version'], check=True,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def elastic_instance(memory_model: str = sizing.MEMORY_MODEL_BALLOON
                     ) -> objects.Instance:
    """An in-memory instance of the elastic flavor, nothing recorded yet."""
    ctxt = nova_context.get_admin_context()
    extra_specs = {sizing.MINIMUM_CPU: str(MINIMUM_CPU),
                   sizing.MINIMUM_MEMORY: str(MINIMUM_MEMORY_MB)}
    if memory_model != sizing.MEMORY_MODEL_BALLOON:
        extra_specs[sizing.MEMORY_MODEL] = memory_model
    flavor = objects.Flavor(
        context=ctxt, id=1, flavorid='realguest', name='realguest',
        vcpus=FLAVOR_VCPUS, memory_mb=FLAVOR_MEMORY_MB, root_gb=0,
        ephemeral_gb=0, swap=0, extra_specs=extra_specs)
    return objects.Instance(context=ctxt,
                            uuid=uuidutils.generate_uuid(),
                            flavor=flavor, system_metadata={})


@dataclasses.dataclass
class RealGuest:
    name: str
    image: images.GuestImage
    instance: objects.Instance
    domain: libvirt.virDomain
    console: console.SerialConsole

    @property
    def recorded(self) -> sizing.ElasticSize:
        return sizing.ElasticSize.from_instance(self.instance)

    def persistent_xml(self) -> str:
        return self.domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def record_boot_size(instance: objects.Instance, vcpus: int,
                     memory_mb: int) -> None:
    """Record ``vcpus``/``memory_mb`` as the instance's boot size, as a
    persisted adjustment does."""
    sizing.RecordUpdate().size(
        instance, vcpus=vcpus, memory_mb=memory_mb, boot_vcpus=vcpus,
        boot_memory_mb=memory_mb).apply_to(instance)


def define_and_start(conn: libvirt.virConnect, name: str,
                     image: images.GuestImage, console_dir: pathlib.Path,
                     boot_vcpus: int | None = None,
                     agent_channel: bool = False,
                     extra_cmdline: str = '',
                     memory_model: str = sizing.MEMORY_MODEL_BALLOON
                     ) -> RealGuest:
    """Define the guest from Nova's config with its elastic size, start it.

    The XML is Nova's ``LibvirtConfigGuest`` with the instance's boot size
    written by this project's ``apply_elastic_size``, as the compute driver
    writes it for every domain it generates. ``boot_vcpus`` records a
    persisted grow first: the guest boots as a regeneration after one
    would. ``agent_channel`` gives it the guest agent's channel, as Nova
    does for an image with ``hw_qemu_guest_agent=yes``. ``extra_cmdline``
    is appended to the image's kernel command line (``xloud.fill_mb=N``,
    see ``guestimage.VIRTIO_MEM_FILL``). ``memory_model`` is the flavor's
    ``xloud:memory_model``: with virtio-mem the minimum is the guest's RAM
    and the rest of the flavor's memory a device asked for nothing at
    boot.
    """
    instance = elastic_instance(memory_model)
    if boot_vcpus is not None:
        record_boot_size(instance, boot_vcpus, MINIMUM_MEMORY_MB)
    console_path = console_dir / f'{name}.console'
    config = domain.guest_config(
        name, image, FLAVOR_VCPUS, FLAVOR_MEMORY_MB, console_path,
        agent_socket=(console_dir / f'{name}.agent' if agent_channel
                      else None))
    config.uuid = instance.uuid
    if extra_cmdline:
        config.os_cmdline = f'{config.os_cmdline} {extra_cmdline}'
    elastic_guest_config.apply_elastic_size(
        config, sizing.ElasticSize.from_instance(instance))
    dom = conn.defineXML(config.to_xml())
    dom.create()
    return RealGuest(name, image, instance, dom,
                     console.SerialConsole(console_path))


def destroy(guest: RealGuest) -> None:
    try:
        if guest.domain.isActive():
            guest.domain.destroy()
        guest.domain.undefine()
    except libvirt.libvirtError:
        # The daemon's own clean-up destroys whatever is left.
        pass



def fill_cmdline(fill_mb: int, keep: bool) -> str:
    """Kernel options making the guest fill ``fill_mb`` once grown."""
    return (f'xloud.fill_at_kb={FILL_AT_KIB} xloud.fill_mb={fill_mb}'
            f' xloud.fill_keep={int(keep)}')


def virtio_mem_device(dom: libvirt.virDomain, flags: int = 0
                      ) -> etree._Element | None:
    """The domain's virtio-mem ``<memory>`` device, None without one."""
    for device in etree.fromstring(dom.XMLDesc(flags)).iterfind(
            './devices/memory[@model="virtio-mem"]'):
        return device
    return None


def _kib(target: etree._Element, name: str) -> int | None:
    element = target.find(name)
    if element is None:
        return None
    return live.unit_to_kib(int(element.text), element.get('unit', 'KiB'))


def virtio_mem_sizes(dom: libvirt.virDomain) -> tuple[int, int | None]:
    """``<requested>`` and ``<current>`` (KiB) of the running device.

    libvirt updates ``<current>`` from QEMU's size-change events: what the
    guest's driver has plugged, the only confirmation there is.
    """
    target = virtio_mem_device(dom).find('target')
    return _kib(target, 'requested'), _kib(target, 'current')


def virtio_mem_update_xml(dom: libvirt.virDomain, requested_kib: int) -> str:
    """The XML ``updateDeviceFlags`` takes to change ``<requested>``, as
    the product writes it (``live.VirtioMem.update``): libvirt 9.0 looks
    the device up by its ``<address>`` (an alias without one is "not
    found") and sets QEMU's ``requested-size`` through its ``<alias>``
    (without one QEMU is asked for ``/machine/peripheral/(null)``); any
    other change (size, block) is refused.
    """
    return live.VirtioMem.of(etree.fromstring(dom.XMLDesc(0))).update(
        requested_kib)


def request_virtio_mem(dom: libvirt.virDomain, requested_kib: int) -> None:
    """Ask the running guest's virtio-mem device for ``requested_kib``."""
    dom.updateDeviceFlags(virtio_mem_update_xml(dom, requested_kib),
                          libvirt.VIR_DOMAIN_AFFECT_LIVE)


def qemu_rss_kib(state_dir: pathlib.Path, name: str) -> int:
    """VmRSS of the domain's QEMU, by the pid file libvirt keeps for it
    under the daemon's ``state_dir``."""
    pid_file = state_dir / 'run' / 'libvirt' / 'qemu' / 'run' / f'{name}.pid'
    pid = int(pid_file.read_text().strip())
    for line in pathlib.Path(f'/proc/{pid}/status').read_text().splitlines():
        key, _, value = line.partition(':')
        if key == 'VmRSS':
            return int(value.split()[0])
    raise LookupError(f'no VmRSS for QEMU pid {pid}')


def guest_status(guest: RealGuest, kind: str = 'state',
                 this_boot: bool = False) -> dict[str, str]:
    """The fields of the guest's last ``kind`` line (``state``, ``memory``,
    ``filled``), empty before it printed one; the fields ``GuestView``
    does not carry (``memory_blocks``) included. ``this_boot``: only what
    it printed since it last booted (a reboot leaves the old lines)."""
    marker = f'{images.STATUS_PREFIX} {kind} '
    boot = f'{images.STATUS_PREFIX} boot '
    for line in reversed(guest.console.lines()):
        if this_boot and boot in line:
            break
        _, found, rest = line.partition(marker)
        if found:
            fields = dict(word.partition('=')[::2] for word in rest.split())
            # A kernel message can land in the middle of a line.
            if all(value.isdigit() or kind != 'state'
                   for value in fields.values()):
                return fields
    return {}
