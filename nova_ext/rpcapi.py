"""Client side of the elastic sizing RPC endpoint served by nova-compute.

The endpoint (nova_ext.compute.endpoint) is served on Nova's existing
``compute`` topic under its own namespace, so no new queue is created and
Nova's own compute RPC API is left untouched.

Version history:

* 1.0 - ``adjust`` (cast), ``get_live_size`` (call).
* 2.0 - ``adjust`` replaced by ``start_adjust``, a call the compute host
  answers as soon as it has taken the request (so a host that is down,
  stuck or without the endpoint ends the request within
  ``[xloud] accept_timeout`` instead of leaving it pending);
  ``describe_domains`` and ``heal`` for the audit. nova-api and the
  compute hosts are upgraded together: a 1.x host refuses 2.0 messages
  and the API reports it, changing nothing.
* 2.1 - ``describe_guests``: readiness, utilisation and the guest's own
  view of running instances, for many at once. A 2.0 host answers it with
  UnsupportedVersion, which the API reports as readiness not read.

Answers may gain keys within a version (DOMAIN and GUEST gained
``virtio_mem`` within 2.1): callers treat a key an older host does not
send as not read, so no version is needed for them.
"""

from __future__ import annotations

import datetime

import oslo_messaging as messaging
from nova import context as nova_context
from nova import objects, rpc
from nova.compute import rpcapi as compute_rpcapi
from nova.objects import base as objects_base

NAMESPACE = 'xloud'
VERSION = '2.1'
# What adjustment and the audit need; a host that serves it takes them.
BASE_VERSION = '2.0'


class ElasticSizingAPI:
    """Sends elastic sizing requests to the compute host of an instance."""

    def __init__(self) -> None:
        target = messaging.Target(topic=compute_rpcapi.RPC_TOPIC,
                                  namespace=NAMESPACE, version=VERSION)
        default_client = rpc.get_client(
            target, serializer=objects_base.NovaObjectSerializer())
        # Picks the instance's cell transport from the targeted context,
        # as Nova's own compute RPC API does.
        self.router = rpc.ClientRouter(default_client)

    def start_adjust(self, ctxt: nova_context.RequestContext,
                     instance: objects.Instance, vcpus: int | None,
                     memory_mb: int | None, persist: bool,
                     not_after: datetime.datetime, timeout: int) -> None:
        """Hand an adjustment to the instance's host; returns once taken.

        The host records the request as in progress and runs it in the
        background; the outcome is the instance action's event. A request
        that reaches the host after ``not_after`` (UTC) is dropped there:
        nova-api has given up on it by then.
        """
        cctxt = self.router.client(ctxt).prepare(
            server=instance.host, version=BASE_VERSION, timeout=timeout)
        cctxt.call(ctxt, 'start_adjust', instance=instance, vcpus=vcpus,
                   memory_mb=memory_mb, persist=persist,
                   not_after=not_after.isoformat())

    def get_live_size(self, ctxt: nova_context.RequestContext,
                      instance: objects.Instance, timeout: int) -> dict:
        """Read the size libvirt reports for a running instance.

        Returns ``{'vcpus': int, 'memory_mb': int}``.
        """
        cctxt = self.router.client(ctxt).prepare(
            server=instance.host, version=BASE_VERSION, timeout=timeout)
        return cctxt.call(ctxt, 'get_live_size', instance=instance)

    def describe_domains(self, ctxt: nova_context.RequestContext, host: str,
                         instance_uuids: list[str], timeout: int) -> dict:
        """What the hypervisor of ``host`` holds for these instances.

        Returns ``{uuid: DOMAIN}`` (``nova_ext.compute.endpoint.
        describe_domain`` documents DOMAIN) for every uuid asked for.
        """
        cctxt = self.router.client(ctxt).prepare(
            server=host, version=BASE_VERSION, timeout=timeout)
        return cctxt.call(ctxt, 'describe_domains',
                          instance_uuids=list(instance_uuids))

    def describe_guests(self, ctxt: nova_context.RequestContext, host: str,
                        instance_uuids: list[str], timeout: int) -> dict:
        """What the guests of ``host`` show of their readiness.

        Returns ``{uuid: GUEST}`` (``nova_ext.compute.endpoint.
        describe_guests`` documents GUEST) for every uuid asked for.
        """
        cctxt = self.router.client(ctxt).prepare(
            server=host, version='2.1', timeout=timeout)
        return cctxt.call(ctxt, 'describe_guests',
                          instance_uuids=list(instance_uuids))

    def heal(self, ctxt: nova_context.RequestContext,
             instance: objects.Instance, timeout: int) -> dict:
        """Settle the record and placement from the domain, the domain
        winning; returns ``{'changes': [str], 'errors': [str]}``."""
        cctxt = self.router.client(ctxt).prepare(
            server=instance.host, version=BASE_VERSION, timeout=timeout)
        return cctxt.call(ctxt, 'heal', instance=instance)
