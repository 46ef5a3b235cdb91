"""Balloon against virtio-mem: from the libvirt call to the guest's view.

Boots the real-guest suite's tiny guest twice on a private libvirtd
(``tests/realguest/daemon.py``), from the same initramfs (both memory
drivers): once with the flavor's memory above the minimum as a virtio-mem
device (the product's ``apply_elastic_size`` for
``xloud:memory_model=virtio-mem``), once with Nova's balloon; both at the
minimum. Each iteration grows each guest to the
flavor's maximum and shrinks it back, one change at a time: virtio-mem by
``updateDeviceFlags`` of ``<requested>`` (live), the balloon by
``setMemoryFlags`` (live). For each change it prints how long the libvirt
call took, when the guest's own view (its serial console: MemTotal for
virtio-mem, MemTotal less the balloon for the balloon) showed the new
size, and when libvirt reported it (the device's ``<current>``; the
balloon's ``actual``). The guest prints its view every 0.3 s, which is the
resolution of "seen"; QEMU rate-limits virtio-mem's size-change event
(``MEMORY_DEVICE_SIZE_CHANGE``, by which libvirt learns ``<current>``) to
one a second per device, which is why libvirt trails the guest there.
Needs what the real-guest tests need (QEMU, libvirtd, a static busybox;
``tools/setup.sh``) and about a minute.

Run: ``PYTHONPATH=. .venv/bin/python bench/virtio_mem.py [iterations]``
(default 3).
"""

import statistics
import sys
import time
from collections.abc import Callable

import libvirt

from deploy.localcloud import guestimage as images
from nova_ext import sizing
from nova_ext.virt import live
from tests.realguest import daemon, guests

KIB_PER_MIB = 1024
DEVICE_KIB = (guests.FLAVOR_MEMORY_MB - guests.MINIMUM_MEMORY_MB) * KIB_PER_MIB
BOOT_TIMEOUT = 120
CHANGE_TIMEOUT = 60
POLL = 0.05


def _measure(call: Callable[[], None], seen: Callable[[], bool],
             confirmed: Callable[[], bool]) -> tuple[float, float, float]:
    """(call ms, seen s, confirmed s), both from the call's start, polled
    together: libvirt may report a change before the guest prints it."""
    started = time.monotonic()
    call()
    call_ms = (time.monotonic() - started) * 1000
    seen_at = confirmed_at = None
    while seen_at is None or confirmed_at is None:
        elapsed = time.monotonic() - started
        if elapsed > CHANGE_TIMEOUT:
            raise TimeoutError(f'change not seen and reported within '
                               f'{CHANGE_TIMEOUT} s')
        if seen_at is None and seen():
            seen_at = elapsed
        if confirmed_at is None and confirmed():
            confirmed_at = elapsed
        time.sleep(POLL)
    return call_ms, seen_at, confirmed_at


def _virtio_mem_cases(guest: guests.RealGuest) -> dict[str, Callable]:
    boot_kb = guest.console.boot_view().memtotal_kb

    def change(requested_kib: int):
        return _measure(
            lambda: guests.request_virtio_mem(guest.domain, requested_kib),
            lambda: guest.console.latest().memtotal_kb == (
                boot_kb + requested_kib),
            lambda: guests.virtio_mem_sizes(guest.domain)[1] == (
                requested_kib))

    return {'grow': lambda: change(DEVICE_KIB), 'shrink': lambda: change(0)}


def _balloon_cases(guest: guests.RealGuest) -> dict[str, Callable]:
    boot_usable_kb = guest.console.boot_view().usable_kb

    def change(memory_mb: int):
        usable_kb = boot_usable_kb - (
            guests.FLAVOR_MEMORY_MB - memory_mb) * KIB_PER_MIB
        return _measure(
            lambda: guest.domain.setMemoryFlags(
                memory_mb * KIB_PER_MIB, libvirt.VIR_DOMAIN_AFFECT_LIVE),
            lambda: guest.console.latest().usable_kb == usable_kb,
            lambda: live.read_size(guest.domain).memory_mb == memory_mb)

    return {'grow': lambda: change(guests.FLAVOR_MEMORY_MB),
            'shrink': lambda: change(guests.MINIMUM_MEMORY_MB)}


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    started = time.monotonic()

    def say(message: str) -> None:
        print(f'[{time.monotonic() - started:6.1f}s] {message}', flush=True)

    kernel = images.fetch_kernel(progress=say)
    image = images.build_initramfs(
        kernel, images.CACHE_DIR / 'initramfs-virtio-mem-bench.cpio',
        balloon_driver=True, virtio_mem=True)
    samples: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    with daemon.PrivateLibvirtd() as private:
        conn = private.connect()
        consoles = private.shared_dir('consoles')
        booted = {
            'virtio-mem': guests.define_and_start(
                conn, 'xloud-bench-virtio-mem', image, consoles,
                memory_model=sizing.MEMORY_MODEL_VIRTIO_MEM),
            'balloon': guests.define_and_start(
                conn, 'xloud-bench-balloon', image, consoles),
        }
        say('two guests started (TCG), waiting for their drivers')
        for guest in booted.values():
            guest.console.wait_for(lambda view: True, BOOT_TIMEOUT,
                                   'its first status line')
        balloon = booted['balloon']
        minimum_kb = balloon.console.boot_view().usable_kb - DEVICE_KIB
        balloon.console.wait_for(lambda view: view.usable_kb == minimum_kb,
                                 BOOT_TIMEOUT, 'the balloon at the minimum')
        say('both at the minimum')
        cases = {'virtio-mem': _virtio_mem_cases(booted['virtio-mem']),
                 'balloon': _balloon_cases(balloon)}
        for iteration in range(1, iterations + 1):
            for method, changes in cases.items():
                for change, run in changes.items():
                    sample = run()
                    samples.setdefault((method, change), []).append(sample)
                    say(f'{iteration}/{iterations} {method:10} {change:6} '
                        f'call {sample[0]:6.1f} ms, seen {sample[1]:5.2f} s, '
                        f'libvirt {sample[2]:5.2f} s')
        for guest in booted.values():
            guests.destroy(guest)

    print(f'\n{iterations} iterations, {guests.MINIMUM_MEMORY_MB} <-> '
          f'{guests.FLAVOR_MEMORY_MB} MiB (median / max)')
    print(f'{"change":8} {"method":10} {"call ms":>15} {"seen s":>13} '
          f'{"libvirt s":>13}')
    for change in ('grow', 'shrink'):
        for method in cases:
            columns = list(zip(*samples[(method, change)], strict=True))
            cells = [f'{statistics.median(c):.1f} / {max(c):.1f}'
                     if i == 0 else
                     f'{statistics.median(c):.2f} / {max(c):.2f}'
                     for i, c in enumerate(columns)]
            print(f'{change:8} {method:10} {cells[0]:>15} {cells[1]:>13} '
                  f'{cells[2]:>13}')


if __name__ == '__main__':
    main()
