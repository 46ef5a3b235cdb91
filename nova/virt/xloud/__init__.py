"""Makes the elastic sizing libvirt driver loadable by Nova.

Nova imports compute drivers only from its own ``nova.virt`` namespace
(``compute_driver = xloud.XloudLibvirtDriver``); the driver itself lives in
``nova_ext.virt.driver``. This package adds a module to that namespace and
replaces no Nova file, as nova-lxd and nova-powervm did.
"""

from nova_ext.virt.driver import XloudLibvirtDriver

__all__ = ['XloudLibvirtDriver']
