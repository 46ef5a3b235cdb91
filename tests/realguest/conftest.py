"""Fixtures: the guest images, a private libvirtd, two booted guests.

The balloon guest boots at the flavor's minimum (1 vCPU, 512 MiB); the
plain one (no balloon driver) as after a persisted grow to
``guests.GROWN_VCPUS`` vCPUs.
"""

import contextlib
import time

import pytest

from deploy.localcloud import guestimage as images
from tests.realguest import daemon, guests

# A TCG guest boots in about 7 s on an idle core; two boot at once on a
# machine other work shares.
BOOT_TIMEOUT = 90


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
def guest_images(progress) -> dict[str, images.GuestImage]:
    """The kernel (downloaded once) and both initramfs, with and without
    the balloon driver."""
    try:
        kernel = images.fetch_kernel(progress=progress)
        built = {
            'balloon': images.build_initramfs(
                kernel, images.CACHE_DIR / 'initramfs-balloon.cpio',
                balloon_driver=True),
            'plain': images.build_initramfs(
                kernel, images.CACHE_DIR / 'initramfs-plain.cpio',
                balloon_driver=False),
        }
    except images.GuestImageUnavailable as exc:
        pytest.skip(f'no guest kernel: {exc}')
    progress(f'guest kernel {kernel.package}')
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
                boot_vcpus=guests.GROWN_VCPUS if kind == 'plain' else None)
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
