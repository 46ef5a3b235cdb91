"""The project's quota for a grow, and the placement claim that holds it.

One path for both kinds of adjustment: nova-api checks and claims a
manual grow before it hands it over (``nova_ext.api.controller``), the
autopilot on nova-compute before it starts one (``nova_ext.compute``).
``objects.Quotas.check_deltas`` is remotable, so nova-compute counts
through nova-conductor as Nova's own services do.
"""

from __future__ import annotations

from nova import exception, objects
from nova.compute import utils as compute_utils
from nova.objects import quotas as quotas_obj
from oslo_log import log as logging

from nova_ext import conf, placement

LOG = logging.getLogger(__name__)
CONF = conf.CONF


def check_grow(context, instance: objects.Instance,
               deltas: dict[str, int]) -> None:
    """Raise ``exception.TooManyInstances`` when a grow by ``deltas``
    (``cores``, ``ram``) would exceed the project's quota.

    As Nova checks a resize up (``compute.api._check_quota_for_upsize``):
    with ``[quota] count_usage_from_placement`` usage is the project's
    placement allocations, which follow the live size, so the grow itself
    is counted; otherwise usage is the flavor's size of every instance,
    which a grow within the flavor never exceeds.
    """
    if not CONF.quota.count_usage_from_placement:
        return
    project_id, user_id = quotas_obj.ids_from_instance(context, instance)
    try:
        objects.Quotas.check_deltas(context, deltas, project_id,
                                    user_id=user_id,
                                    check_project_id=project_id,
                                    check_user_id=user_id)
    except exception.OverQuota as exc:
        quotas = exc.kwargs['quotas']
        usages = exc.kwargs['usages']
        headroom = compute_utils.get_headroom(quotas, usages, deltas)
        overs, reqs, allowed, used = compute_utils.get_over_quota_detail(
            headroom, exc.kwargs['overs'], quotas, deltas)
        raise exception.TooManyInstances(overs=overs, req=reqs, used=used,
                                         allowed=allowed)


def claim_grow(context, instance: objects.Instance, vcpus: int | None,
               memory_mb: int | None,
               provider: str | None = None) -> tuple[int, int] | None:
    """Check the quota of a grow and claim it in placement.

    Each requested size is claimed as a floor of the allocation (never
    lowering it), so that a host without room refuses the grow here,
    before the guest is touched; the compute host settles the allocation
    to the size libvirt confirms. Returns the allocation before the claim
    when it changed, else None. Raises ``exception.TooManyInstances``,
    ``placement.InsufficientCapacity`` or
    ``placement.AllocationUpdateFailed``, having changed nothing.
    """
    current = placement.allocated(context, instance, provider)
    if current is None or ((vcpus or 0) <= current[0] and
                           (memory_mb or 0) <= current[1]):
        return None
    check_grow(context, instance,
               {'cores': max(0, (vcpus or 0) - current[0]),
                'ram': max(0, (memory_mb or 0) - current[1])})
    before = placement.claim_at_least(context, instance, vcpus or 0,
                                      memory_mb or 0, provider)
    if CONF.quota.recheck_quota:
        # As Nova after its own claims: another grow of the project may
        # have been claimed meanwhile.
        try:
            check_grow(context, instance, {'cores': 0, 'ram': 0})
        except exception.TooManyInstances:
            placement.set_allocation(context, instance, *before,
                                     provider_uuid=provider)
            raise
    return before


def release_grow(context, instance: objects.Instance,
                 claimed_from: tuple[int, int] | None,
                 provider: str | None = None) -> None:
    """Give back a claim ``claim_grow`` made, for a grow not taken."""
    if claimed_from is None:
        return
    try:
        placement.set_allocation(context, instance, *claimed_from,
                                 provider_uuid=provider)
    except Exception:
        # The original error is the answer; the audit, or the compute
        # host's next adjustment, settles the allocation again.
        LOG.exception('Could not release the placement claim of a grow '
                      'that was not taken', instance=instance)
