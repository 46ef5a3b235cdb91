"""Domain XML for the tiny guest, built the way Nova's libvirt driver does.

Nova's ``LibvirtConfigGuest`` with the flavor's maximum as ``<vcpu>`` and
``<memory>`` (as ``LibvirtDriver._get_guest_config`` sets them), the
guest's architecture (as ``_configure_guest_by_virt_type``), Nova's virtio
``<memballoon>`` (as ``_guest_add_memory_balloon``), ACPI for CPU hotplug,
a direct kernel boot, a serial console on a file and, for an image with
``hw_qemu_guest_agent``, the agent's channel (as ``_add_qga_device``).
Without an image the
domain runs the firmware only: enough for what libvirt decides before the
guest takes part.
"""

import pathlib
import uuid

from nova.virt.libvirt import config as vconfig
from oslo_utils import units

from deploy.localcloud import guestimage as images

# Nova's [libvirt]mem_stats_period_seconds default.
MEM_STATS_PERIOD_SECONDS = 10


def guest_config(name: str, image: images.GuestImage | None,
                 max_vcpus: int, max_memory_mb: int,
                 console_path: pathlib.Path | None = None,
                 agent_socket: pathlib.Path | None = None
                 ) -> vconfig.LibvirtConfigGuest:
    guest = vconfig.LibvirtConfigGuest()
    guest.virt_type = 'qemu'
    guest.name = name
    guest.uuid = str(uuid.uuid4())
    guest.vcpus = max_vcpus
    guest.memory = max_memory_mb * units.Ki
    guest.os_type = 'hvm'
    guest.os_arch = 'x86_64'
    guest.os_mach_type = 'q35'
    if image is not None:
        guest.os_kernel = str(image.kernel)
        guest.os_initrd = str(image.initrd)
        guest.os_cmdline = image.cmdline
    guest.features = [vconfig.LibvirtConfigGuestFeatureACPI(),
                      vconfig.LibvirtConfigGuestFeatureAPIC()]

    if console_path is not None:
        serial = vconfig.LibvirtConfigGuestSerial()
        serial.type = 'file'
        serial.source_path = str(console_path)
        serial.target_port = 0
        guest.add_device(serial)

    if agent_socket is not None:
        channel = vconfig.LibvirtConfigGuestChannel()
        channel.type = 'unix'
        channel.target_name = images.AGENT_PORT_NAME
        channel.source_path = str(agent_socket)
        guest.add_device(channel)

    balloon = vconfig.LibvirtConfigMemoryBalloon()
    balloon.model = 'virtio'
    balloon.period = MEM_STATS_PERIOD_SECONDS
    guest.add_device(balloon)
    return guest
