"""Nova's libvirt driver, booting guests at their elastic size.

Loaded with ``compute_driver = xloud.XloudLibvirtDriver`` (the module
``nova.virt.xloud`` re-exports this class). It changes three things and
nothing else:

* the generated guest configuration carries the recorded boot size as
  ``<vcpu current>`` and ``<currentMemory>`` (``guest_config``), the flavor
  staying the maximum;
* whenever Nova (re)creates the domain from that configuration -- spawn
  (create, rebuild, evacuate, unshelve), hard reboot and start, resize and
  cold migration, revert -- the live size is recorded as the new domain
  reports it and the placement allocation set to it; memory still on its
  way down to the boot size (the guest's balloon driver not loaded yet) is
  confirmed in the background; after a live migration, which keeps the
  running size, the allocation on the destination is set to the live
  size;
* the elastic sizing RPC endpoint is served by the compute service.
"""

from __future__ import annotations

import libvirt as libvirt_module
from nova import context as nova_context
from nova import exception, objects, thread_pool_factory, utils
from nova.virt.libvirt import driver as libvirt_driver
from oslo_log import log as logging

from nova_ext import placement, sizing
from nova_ext.compute.endpoint import ElasticSizingEndpoint
from nova_ext.virt import guest_config, live

LOG = logging.getLogger(__name__)


class XloudLibvirtDriver(libvirt_driver.LibvirtDriver):

    def __init__(self, virtapi, read_only: bool = False) -> None:
        super().__init__(virtapi, read_only)
        # The one reach into Nova internals. ComputeVirtAPI keeps the
        # ComputeManager as ``_compute``; the manager fills
        # ``additional_endpoints`` before it loads the driver, and
        # Service.start() serves every entry on the ``compute`` topic, so
        # the endpoint (its own Target namespace) needs no queue of its
        # own and no change to the manager. Other users of the driver
        # (nova-manage, unit tests with a bare VirtAPI) have no manager.
        manager = getattr(virtapi, '_compute', None)
        endpoints = getattr(manager, 'additional_endpoints', None)
        if endpoints is not None:
            endpoints.append(ElasticSizingEndpoint(self, manager.host))

    def elastic_domain(self, instance: objects.Instance
                       ) -> libvirt_module.virDomain:
        """The instance's libvirt domain, for nova_ext.virt.live."""
        return self._host.get_guest(instance)._domain

    def _get_guest_config(self, instance, network_info, image_meta,
                          disk_info, *args, **kwargs):
        guest = super()._get_guest_config(instance, network_info,
                                          image_meta, disk_info, *args,
                                          **kwargs)
        guest_config.apply_elastic_size(
            guest, sizing.ElasticSize.from_instance(instance))
        return guest

    def spawn(self, context, instance, *args, **kwargs):
        super().spawn(context, instance, *args, **kwargs)
        self._start_from_boot_size(context, instance)

    def _hard_reboot(self, context, instance, *args, **kwargs):
        # Hard reboot, power_on and resume_state_on_host_boot all rebuild
        # the domain here; soft reboot falls back to it when it fails.
        result = super()._hard_reboot(context, instance, *args, **kwargs)
        self._start_from_boot_size(context, instance)
        return result

    def finish_migration(self, context, migration, instance, *args,
                         **kwargs):
        super().finish_migration(context, migration, instance, *args,
                                 **kwargs)
        self._start_from_boot_size(context, instance)

    def finish_revert_migration(self, context, instance, *args, **kwargs):
        super().finish_revert_migration(context, instance, *args, **kwargs)
        self._start_from_boot_size(context, instance)

    def post_live_migration_at_destination(self, context, instance, *args,
                                           **kwargs):
        super().post_live_migration_at_destination(context, instance,
                                                   *args, **kwargs)
        # The guest kept running at its live size; placement claimed the
        # flavor (or its resources:* override) on this host.
        size = sizing.ElasticSize.from_instance(instance)
        if guest_config.is_elastic(size) or _has_record(instance):
            self._settle_allocation(context, instance, size.live_vcpus,
                                    size.live_memory_mb)

    def _start_from_boot_size(self, context: nova_context.RequestContext,
                              instance: objects.Instance) -> None:
        """Record the size the new domain runs at, claim it.

        The domain was created at the boot size, but only vCPUs are exact
        from the start: QEMU gives the guest all of ``<memory>`` and the
        balloon reaches ``<currentMemory>`` once the guest's driver runs,
        seconds after boot or never. What libvirt reports is recorded now;
        memory not yet at the boot size is confirmed in the background.
        """
        size = sizing.ElasticSize.from_instance(instance)
        if not (guest_config.is_elastic(size) or _has_record(instance)):
            return
        domain = self.elastic_domain(instance)
        if not domain.isActive():
            # Defined, not started (a migration finished with power_on
            # false): its start goes through _hard_reboot, which records
            # what it then runs at; until then it holds the boot size.
            self._record_start_size(context, instance, size.boot_vcpus,
                                    size.boot_memory_mb)
            return
        running = live.read_size(domain)
        if running.vcpus != size.boot_vcpus:
            LOG.warning('The domain started with %d vCPUs, not its boot '
                        'size %d; recording what it runs', running.vcpus,
                        size.boot_vcpus, instance=instance)
        self._record_start_size(context, instance, running.vcpus,
                                running.memory_mb)
        if running.memory_mb != size.boot_memory_mb:
            LOG.info('The guest holds %d MiB, its balloon target is %d '
                     'MiB; confirming in the background', running.memory_mb,
                     size.boot_memory_mb, instance=instance)
            thread_pool_factory.spawn(
                self._confirm_boot_memory, context, instance.obj_clone(),
                size.boot_memory_mb)

    def _record_start_size(self, context: nova_context.RequestContext,
                           instance: objects.Instance, vcpus: int,
                           memory_mb: int) -> None:
        sizing.record_size(instance, vcpus=vcpus, memory_mb=memory_mb,
                           boot=False)
        instance.save()
        self._settle_allocation(context, instance, vcpus, memory_mb)

    def _confirm_boot_memory(self, context: nova_context.RequestContext,
                             instance: objects.Instance,
                             memory_mb: int) -> None:
        """Wait for the balloon to reach the boot size; record the outcome.

        Runs on Nova's executor (eventlet or threads alike). The wait
        holds no lock. The record is written under the instance's lock,
        from what the domain reports then: an adjustment that ran in
        between has finished, and its own record is older than that.
        """
        try:
            live.wait_for_memory(self.elastic_domain(instance), memory_mb,
                                 live.BOOT_CONFIRM_TIMEOUT)

            @utils.synchronized(instance.uuid)
            def record() -> None:
                instance.refresh()
                domain = self.elastic_domain(instance)
                if not domain.isActive():
                    LOG.info('The domain stopped before its boot memory '
                             'was confirmed', instance=instance)
                    return
                running = live.read_size(domain)
                self._record_start_size(context, instance, running.vcpus,
                                        running.memory_mb)
                if running.memory_mb == memory_mb:
                    LOG.info('Boot memory of %d MiB confirmed', memory_mb,
                             instance=instance)
                else:
                    LOG.warning(
                        'The guest did not reach its boot memory of %d MiB '
                        'within %gs (is its balloon driver loaded?); '
                        'recorded the %d MiB it holds', memory_mb,
                        live.BOOT_CONFIRM_TIMEOUT, running.memory_mb,
                        instance=instance)

            record()
        except exception.InstanceNotFound:
            LOG.info('The instance is gone; boot memory not confirmed',
                     instance=instance)
        except Exception:
            # Nothing waits for this task: its failure must be seen here.
            LOG.exception('Could not confirm the boot memory',
                          instance=instance)

    def _settle_allocation(self, context: nova_context.RequestContext,
                           instance: objects.Instance, vcpus: int,
                           memory_mb: int) -> None:
        # The guest already runs: a failure here must not undo the
        # operation that started it. The allocation stays what Nova
        # claimed (never less than the guest uses) until the next
        # adjustment or regeneration settles it.
        try:
            # This host's node, which is not yet instance.node while an
            # evacuation spawns the guest here.
            placement.set_allocation(
                context, instance, vcpus, memory_mb,
                provider_uuid=self._host.get_node_uuid())
        except Exception:
            LOG.exception('Could not set the placement allocation to the '
                          'elastic size %d vCPUs / %d MiB', vcpus,
                          memory_mb, instance=instance)


def _has_record(instance: objects.Instance) -> bool:
    return sizing.SYSMETA_FLAVOR in (instance.system_metadata or {})
