"""virNodeGetMemoryStats as libvirt's QEMU driver answers it, against the
fake libvirt of tests/nova (the autopilot reads the host's free memory
with it; libvirt's test driver does not implement it)."""

import libvirt
import pytest

from tests.nova import fakelibvirt as elastic_fake

ALL_CELLS = elastic_fake.MISSING_CONSTANTS['VIR_NODE_MEMORY_STATS_ALL_CELLS']


class _Host:
    """What the fake reads of a connection: its memory, its guests."""

    class host_info:
        kB_mem = 8 * 1024 * 1024

    _vms: dict = {}


def test_the_constant_is_libvirt_s():
    assert ALL_CELLS == libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS


@pytest.mark.parametrize('cell', [ALL_CELLS, 0])
def test_host_memory_statistics_match_the_fake(libvirtd, cell):
    real = libvirtd.connect().getMemoryStats(cell, 0)
    fake = elastic_fake.get_memory_stats(_Host, cell)
    assert sorted(fake) == sorted(real)
    assert 0 < real['free'] <= real['total']


@pytest.mark.parametrize('cell', [4096, -7])
def test_a_bad_cell_is_refused_as_the_fake_refuses_it(libvirtd, cell):
    with pytest.raises(libvirt.libvirtError) as real:
        libvirtd.connect().getMemoryStats(cell, 0)
    # The fake raises the fake module's libvirtError, whose error domains
    # are numbered its own way.
    with pytest.raises(elastic_fake.fakelibvirt.libvirtError) as fake:
        elastic_fake.get_memory_stats(_Host, cell)
    assert (fake.value.get_error_code(), str(fake.value)) == (
        real.value.get_error_code(), str(real.value))
