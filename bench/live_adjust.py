"""How long nova_ext.virt.live takes per change on libvirt's test driver.

This is the library's own cost (flag handling, re-reading the domain,
KiB/MiB conversion, persisting), without a hypervisor: the floor under
every adjustment. Run: ``python bench/live_adjust.py [rounds]``.
"""

import statistics
import sys
import time
import uuid

import libvirt

from nova_ext.virt import live

XML = """<domain type='test'><name>bench-{name}</name><uuid>{uuid}</uuid>
<memory unit='KiB'>4194304</memory>
<currentMemory unit='KiB'>2097152</currentMemory>
<vcpu current='2'>4</vcpu><os><type>hvm</type></os></domain>"""


def _timed(rounds: int, change) -> list[float]:
    samples = []
    for i in range(rounds):
        start = time.perf_counter()
        change(i)
        samples.append((time.perf_counter() - start) * 1e6)
    return samples


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    conn = libvirt.open('test:///default')
    domain = conn.defineXML(XML.format(name=uuid.uuid4().hex[:8],
                                       uuid=uuid.uuid4()))
    domain.create()
    cases = {
        'read_size': lambda i: live.read_size(domain),
        'apply_vcpus live': lambda i: live.apply_vcpus(
            domain, 2 + i % 3, persist=False),
        'apply_vcpus persist': lambda i: live.apply_vcpus(
            domain, 2 + i % 3, persist=True),
        'apply_memory live': lambda i: live.apply_memory(
            domain, 2048 + 512 * (i % 4), persist=False),
        'apply_memory persist': lambda i: live.apply_memory(
            domain, 2048 + 512 * (i % 4), persist=True),
    }
    print(f'{rounds} rounds each on test:///default (microseconds)')
    print(f'{"case":24} {"median":>8} {"p95":>8} {"max":>8}')
    try:
        for name, change in cases.items():
            samples = sorted(_timed(rounds, change))
            print(f'{name:24} {statistics.median(samples):8.1f} '
                  f'{samples[int(len(samples) * 0.95)]:8.1f} '
                  f'{samples[-1]:8.1f}')
    finally:
        domain.destroy()
        domain.undefine()
        conn.close()


if __name__ == '__main__':
    main()
