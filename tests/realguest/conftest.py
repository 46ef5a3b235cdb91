"""Fixtures: the guest images, a private libvirtd, the booted guests.

The balloon guest boots at the flavor's minimum (1 vCPU, 512 MiB), with
the guest agent's channel and no agent behind it; the plain one (no
balloon driver, no channel) as after a persisted grow to
``guests.GROWN_VCPUS`` vCPUs. The agent guest (balloon driver, the QEMU
guest agent, no onlining of hot-plugged CPUs in its ``/init``) boots at
the minimum, on its own, for the tests that ask for it.

The memory-method guests (``test_virtio_mem.py``) boot in pairs, each pair
for one test and gone after it: the same initramfs (both memory drivers)
once with a virtio-mem device for the memory above the minimum and once
with the balloon; then a virtio-mem domain whose guest has no virtio-mem
driver and one whose guest keeps its memory busy.
"""

import contextlib
import time

import pytest

from deploy.localcloud import guestimage as images
from nova_ext import sizing
from tests.realguest import daemon, guests

# A TCG guest boots in about 7 s on an idle core; two boot at once on a
# machine other work shares.
BOOT_TIMEOUT = 90
VIRTIO_MEM = sizing.MEMORY_MODEL_VIRTIO_MEM


@pytest.fixture(scope='session')
def progress(pytestconfig):
    """Print set-up progress even while pytest captures output."""
    capture = pytestconfig.pluginmanager.getplugin('capturemanager')
    started = time.monotonic()

    def say(message: str) -> None:
        disabled = (capture.global_and_fixture_disabled() if capture
                    else contextlib.nullcontext())
        with disabled:
            print(f'\n[realguest {time.monotonic() - started:5.1f}s] '
                  f'{message}', flush=True)

    return say


@pytest.fixture(scope='session')
def guest_kernel(progress) -> images.Kernel:
    """The Debian kernel and its modules, downloaded once."""
    try:
        kernel = images.fetch_kernel(progress=progress)
    except images.GuestImageUnavailable as exc:
        pytest.skip(f'no guest kernel: {exc}')
    progress(f'guest kernel {kernel.package}')
    return kernel


@pytest.fixture(scope='session')
def guest_images(guest_kernel) -> dict[str, images.GuestImage]:
    """Both initramfs, with and without the balloon driver."""
    kernel = guest_kernel
    try:
        built = {
            'balloon': images.build_initramfs(
                kernel, images.CACHE_DIR / 'initramfs-balloon.cpio',
                balloon_driver=True),
            'plain': images.build_initramfs(
                kernel, images.CACHE_DIR / 'initramfs-plain.cpio',
                balloon_driver=False),
        }
    except images.GuestImageUnavailable as exc:
        pytest.skip(f'no guest image: {exc}')
    return built


@pytest.fixture(scope='session')
def libvirtd(progress):
    with daemon.PrivateLibvirtd() as private:
        progress(f'private libvirtd up: {private.uri}')
        yield private
    progress('private libvirtd stopped, its directory removed')


@pytest.fixture(scope='session')
def booted_guests(libvirtd, guest_images, progress):
    """Both guests, booted together to halve the wait; destroyed after."""
    conn = libvirtd.connect()
    console_dir = libvirtd.shared_dir('consoles')
    started: dict[str, guests.RealGuest] = {}
    try:
        for kind, image in guest_images.items():
            started[kind] = guests.define_and_start(
                conn, f'xloud-realguest-{kind}', image, console_dir,
                boot_vcpus=guests.GROWN_VCPUS if kind == 'plain' else None,
                agent_channel=kind == 'balloon')
        progress('guests defined and started: ' + ', '.join(started))
        for guest in started.values():
            guest.console.wait_for(lambda view: True, BOOT_TIMEOUT,
                                   'its first status line')
        progress('guests booted')
        yield started
    finally:
        for guest in started.values():
            guests.destroy(guest)
        conn.close()


@pytest.fixture(scope='session')
def agent_guest(libvirtd, guest_kernel, progress):
    """A guest running Debian's qemu-ga whose /init leaves hot-plugged
    CPUs offline: they come online only through the agent."""
    try:
        image = images.build_initramfs(
            guest_kernel, images.CACHE_DIR / 'initramfs-agent.cpio',
            balloon_driver=True,
            guest_agent=True, onlines_cpus=False)
    except images.GuestImageUnavailable as exc:
        pytest.skip(f'no guest agent image: {exc}')
    conn = libvirtd.connect()
    guest = guests.define_and_start(
        conn, 'xloud-realguest-agent', image,
        libvirtd.shared_dir('consoles'), agent_channel=True)
    try:
        guest.console.wait_for(lambda view: True, BOOT_TIMEOUT,
                               'its first status line')
        progress('agent guest booted')
        yield guest
    finally:
        guests.destroy(guest)
        conn.close()


@pytest.fixture(scope='session')
def virtio_mem_image(guest_kernel) -> images.GuestImage:
    """Both memory drivers: virtio_mem finds no device on a balloon
    domain, the balloon driver stays idle on a virtio-mem one, so one
    guest serves both methods."""
    try:
        return images.build_initramfs(
            guest_kernel, images.CACHE_DIR / 'initramfs-virtio-mem.cpio',
            balloon_driver=True, virtio_mem=True)
    except images.GuestImageUnavailable as exc:
        pytest.skip(f'no virtio-mem guest image: {exc}')


@contextlib.contextmanager
def _booted_pair(libvirtd, starters, progress, what: str):
    """``{kind: RealGuest}`` started by ``starters`` (``{kind: start(conn,
    console_dir)}``) and booted; destroyed afterwards."""
    conn = libvirtd.connect()
    console_dir = libvirtd.shared_dir('consoles')
    started: dict[str, guests.RealGuest] = {}
    try:
        for kind, start in starters.items():
            started[kind] = start(conn, console_dir)
        progress(f'{what} defined and started: ' + ', '.join(started))
        for guest in started.values():
            guest.console.wait_for(lambda view: True, BOOT_TIMEOUT,
                                   'its first status line')
        progress(f'{what} booted')
        yield started
    finally:
        for guest in started.values():
            guests.destroy(guest)
        conn.close()


@pytest.fixture
def memory_method_guests(libvirtd, virtio_mem_image, progress):
    """The same guest with virtio-mem and with the balloon, at the
    minimum; each touches ``guests.TOUCH_MB`` after its grow to the maximum."""
    touch = guests.fill_cmdline(guests.TOUCH_MB, keep=False)
    with _booted_pair(libvirtd, {
        'virtio-mem': lambda conn, consoles: guests.define_and_start(
            conn, 'xloud-realguest-virtio-mem', virtio_mem_image, consoles,
            extra_cmdline=touch, memory_model=VIRTIO_MEM),
        'balloon': lambda conn, consoles: guests.define_and_start(
            conn, 'xloud-realguest-mem-balloon', virtio_mem_image, consoles,
            extra_cmdline=touch),
    }, progress, 'memory-method guests') as started:
        yield started


@pytest.fixture
def unconfirmed_virtio_mem_guests(libvirtd, guest_kernel, virtio_mem_image,
                                  progress):
    """Two virtio-mem domains whose guests cannot follow ``<requested>``:
    one without the driver (the balloon image), one that keeps
    ``guests.HOLD_MB`` once grown."""
    try:
        no_driver = images.build_initramfs(
            guest_kernel, images.CACHE_DIR / 'initramfs-no-virtio-mem.cpio',
            balloon_driver=True)
    except images.GuestImageUnavailable as exc:
        pytest.skip(f'no guest image: {exc}')
    hold = guests.fill_cmdline(guests.HOLD_MB, keep=True)
    with _booted_pair(libvirtd, {
        'no-driver': lambda conn, consoles: guests.define_and_start(
            conn, 'xloud-realguest-vmem-nodriver', no_driver, consoles,
            memory_model=VIRTIO_MEM),
        'busy': lambda conn, consoles: guests.define_and_start(
            conn, 'xloud-realguest-vmem-busy', virtio_mem_image, consoles,
            extra_cmdline=hold, memory_model=VIRTIO_MEM),
    }, progress, 'unconfirmed virtio-mem guests') as started:
        yield started
