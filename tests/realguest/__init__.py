"""Proof on a real Linux guest under libvirt's QEMU driver (doc/realguest.md).
"""

from nova import objects

# nova_ext.sizing names Nova's versioned objects at import time.
objects.register_all()
