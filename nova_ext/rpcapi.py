"""Client side of the elastic sizing RPC endpoint served by nova-compute.

The endpoint (nova_ext.compute.endpoint) is served on Nova's existing
``compute`` topic under its own namespace, so no new queue is created and
Nova's own compute RPC API is left untouched.
"""

from __future__ import annotations

import oslo_messaging as messaging
from nova import context as nova_context
from nova import objects, rpc
from nova.compute import rpcapi as compute_rpcapi
from nova.objects import base as objects_base

NAMESPACE = 'xloud'
# 1.0: adjust (cast), get_live_size (call)
VERSION = '1.0'


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

    def adjust(self, ctxt: nova_context.RequestContext,
               instance: objects.Instance, vcpus: int | None,
               memory_mb: int | None, persist: bool) -> None:
        """Ask the instance's host to apply a new current size.

        A cast: the API has already started the instance action, and the
        compute records the outcome as that action's event.
        """
        cctxt = self.router.client(ctxt).prepare(
            server=instance.host, version=VERSION)
        cctxt.cast(ctxt, 'adjust', instance=instance, vcpus=vcpus,
                   memory_mb=memory_mb, persist=persist)

    def get_live_size(self, ctxt: nova_context.RequestContext,
                      instance: objects.Instance, timeout: int) -> dict:
        """Read the size libvirt reports for a running instance.

        Returns ``{'vcpus': int, 'memory_mb': int}``.
        """
        cctxt = self.router.client(ctxt).prepare(
            server=instance.host, version=VERSION, timeout=timeout)
        return cctxt.call(ctxt, 'get_live_size', instance=instance)
