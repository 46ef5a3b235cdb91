"""Which flavors and instances can be elastic, and why not.

A live size is only honest where placement, Nova's resource tracker and
the host all see the guest shrink and grow. Some flavor and image settings
make that impossible:

* pinned vCPUs (``hw:cpu_policy=dedicated`` or ``mixed``, ``resources:PCPU``,
  realtime) are allocated as ``PCPU`` and pinned one by one;
* a guest NUMA topology (``hw:numa_nodes``, ``hw:numa_*``, any
  ``hw:mem_page_size``, which Nova turns into one) is counted at the
  flavor's size by the resource tracker and ``NUMATopologyFilter``
  whatever the guest runs at;
* memory the balloon cannot give back to the host: hugepages, locked memory
  (``hw:locked_memory``), and PCI/VFIO devices (``pci_passthrough:alias``,
  vGPUs, SR-IOV ports), which pin all guest memory.

For each, the dimension it affects is refused: a flavor minimum for it is
a 400 when set, an adjustment of it a 409, and instances boot at the
flavor's size in it. ``doc/flavors.md`` lists every combination.
"""

from __future__ import annotations

from nova import objects
from nova.i18n import _

VCPUS = 'vcpus'
MEMORY = 'memory_mb'
# System metadata key set (to the size asked, in MiB) when the guest's
# balloon did not reach the size asked, at its boot or in an adjustment: a
# guest without a balloon driver. Cleared when a start or an adjustment
# sees the balloon answer. Written by sizing.RecordUpdate.balloon.
SYSMETA_BALLOON_UNANSWERED = 'xloud_balloon_unanswered'

_PINNED = _('pins vCPUs to host CPUs (placement PCPU, Nova\'s pinning), '
            'which a hot-plugged vCPU would not follow')
_NUMA = _('gives the guest a NUMA topology, which Nova\'s resource tracker '
          'and NUMATopologyFilter count at the flavor\'s size')
_RESIDENT = _('keeps all guest memory resident on the host whatever the '
              'balloon says')
_ENCRYPTED = _('with xloud:memory_model=virtio-mem: QEMU cannot plug or '
               'unplug memory of a guest whose memory is encrypted (SEV)')
_NO_BALLOON = _('its guest did not take the balloon to %(target)s MiB '
                'when last asked (no balloon driver?); memory is adjustable '
                'again once a start sees the balloon answer')


def _truthy(value) -> bool:
    return str(value).strip().lower() in ('1', 'true', 'yes', 'on', 'y')


def spec_conflicts(extra_specs: dict, image_properties: dict | None = None
                   ) -> dict[str, str]:
    """``{dimension: reason}`` for what these specs make non-elastic.

    ``image_properties`` are the image's ``hw_*`` properties, which
    request the same as the flavor's ``hw:*`` specs. Each reason names
    the setting.
    """
    image_properties = image_properties or {}
    conflicts: dict[str, str] = {}

    def refuse(dimensions: tuple[str, ...], setting: str,
               reason: str) -> None:
        for dimension in dimensions:
            conflicts.setdefault(dimension, f'{setting} {reason}')

    both = (VCPUS, MEMORY)
    policy = (extra_specs.get('hw:cpu_policy') or
              image_properties.get('hw_cpu_policy'))
    if policy in ('dedicated', 'mixed'):
        refuse(both, f'hw:cpu_policy={policy}', _PINNED)
    if 'resources:PCPU' in extra_specs:
        refuse(both, 'resources:PCPU', _PINNED)
    if _truthy(extra_specs.get('hw:cpu_realtime', False)) or (
            _truthy(image_properties.get('hw_cpu_realtime', False))):
        refuse(both, 'hw:cpu_realtime', _PINNED)
    page_size = (extra_specs.get('hw:mem_page_size') or
                 image_properties.get('hw_mem_page_size'))
    if page_size:
        refuse(both, f'hw:mem_page_size={page_size}', _NUMA)
    for key in sorted(extra_specs):
        if key.startswith('hw:numa_'):
            refuse(both, key, _NUMA)
    if image_properties.get('hw_numa_nodes'):
        refuse(both, 'hw_numa_nodes', _NUMA)
    if _truthy(extra_specs.get('hw:locked_memory', False)) or (
            _truthy(image_properties.get('hw_locked_memory', False))):
        refuse((MEMORY,), 'hw:locked_memory', _RESIDENT)
    # sizing.MEMORY_MODEL / MEMORY_MODEL_VIRTIO_MEM (sizing imports this
    # module).
    if extra_specs.get('xloud:memory_model') == 'virtio-mem' and (
            _truthy(extra_specs.get('hw:mem_encryption', False)) or
            _truthy(image_properties.get('hw_mem_encryption', False))):
        refuse((MEMORY,), 'hw:mem_encryption', _ENCRYPTED)
    if extra_specs.get('pci_passthrough:alias'):
        refuse((MEMORY,), 'pci_passthrough:alias', _RESIDENT)
    for key in sorted(extra_specs):
        if key in ('resources:VGPU', 'resources:PGPU') or key.startswith(
                'resources:CUSTOM_'):
            refuse((MEMORY,), key, _RESIDENT)
    return conflicts


def vcpu_step(extra_specs: dict, image_properties: dict | None = None
              ) -> int:
    """The unit vCPUs are adjusted in: the threads per core a flavor's
    (or image's) CPU topology asks for, so that no core is left with part
    of its threads; 1 without one."""
    image_properties = image_properties or {}
    raw = (extra_specs.get('hw:cpu_threads') or
           image_properties.get('hw_cpu_threads') or 1)
    try:
        return max(1, int(raw))
    except (TypeError, ValueError):
        return 1


def image_properties(instance: objects.Instance) -> dict:
    """The image's properties Nova keeps in system metadata (``image_*``)."""
    return {key[len('image_'):]: value
            for key, value in (instance.system_metadata or {}).items()
            if key.startswith('image_hw_')}


def guest_conflicts(instance: objects.Instance) -> dict[str, str]:
    """``{dimension: reason}`` from what its guest showed since its start.

    These hold live adjustments back, not the boot size: the next start
    still asks the balloon for it, and answered, clears them.
    """
    unanswered = (instance.system_metadata or {}).get(
        SYSMETA_BALLOON_UNANSWERED)
    if unanswered:
        return {MEMORY: _NO_BALLOON % {'target': unanswered}}
    return {}


def instance_conflicts(instance: objects.Instance, *,
                       devices: bool = False,
                       guest: bool = True) -> dict[str, str]:
    """``{dimension: reason}`` for an instance, from its flavor and image,
    with ``guest`` from its guest (:func:`guest_conflicts`); with
    ``devices`` also from the PCI devices it was given (SR-IOV ports bring
    some that no flavor or image names), which needs them loaded."""
    conflicts = spec_conflicts(instance.flavor.extra_specs or {},
                               image_properties(instance))
    if devices and MEMORY not in conflicts:
        requests = instance.pci_requests
        if requests is not None and requests.requests:
            names = sorted({request.alias_name or _('a Neutron port')
                            for request in requests.requests})
            conflicts[MEMORY] = _('its PCI devices (%(names)s) '
                                  '%(reason)s') % {
                'names': ', '.join(names), 'reason': _RESIDENT}
    if guest:
        conflicts = {**guest_conflicts(instance), **conflicts}
    return conflicts
