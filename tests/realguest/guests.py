"""Booting tiny guests at their flavor's minimum on the private libvirtd."""

import dataclasses
import pathlib
import shutil
import subprocess

import libvirt
import pytest
from nova import context as nova_context
from nova import objects
from oslo_utils import uuidutils

from deploy.localcloud import guestimage as images
from nova_ext import sizing
from nova_ext.virt import guest_config as elastic_guest_config
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


def elastic_instance() -> objects.Instance:
    """An in-memory instance of the elastic flavor, nothing recorded yet."""
    ctxt = nova_context.get_admin_context()
    flavor = objects.Flavor(
        context=ctxt, id=1, flavorid='realguest', name='realguest',
        vcpus=FLAVOR_VCPUS, memory_mb=FLAVOR_MEMORY_MB, root_gb=0,
        ephemeral_gb=0, swap=0,
        extra_specs={sizing.MINIMUM_CPU: str(MINIMUM_CPU),
                     sizing.MINIMUM_MEMORY: str(MINIMUM_MEMORY_MB)})
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
                     agent_channel: bool = False) -> RealGuest:
    """Define the guest from Nova's config with its elastic size, start it.

    The XML is Nova's ``LibvirtConfigGuest`` with the instance's boot size
    written by this project's ``apply_elastic_size``, as the compute driver
    writes it for every domain it generates. ``boot_vcpus`` records a
    persisted grow first: the guest boots as a regeneration after one
    would. ``agent_channel`` gives it the guest agent's channel, as Nova
    does for an image with ``hw_qemu_guest_agent=yes``.
    """
    instance = elastic_instance()
    if boot_vcpus is not None:
        record_boot_size(instance, boot_vcpus, MINIMUM_MEMORY_MB)
    console_path = console_dir / f'{name}.console'
    config = domain.guest_config(
        name, image, FLAVOR_VCPUS, FLAVOR_MEMORY_MB, console_path,
        agent_socket=(console_dir / f'{name}.agent' if agent_channel
                      else None))
    config.uuid = instance.uuid
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

