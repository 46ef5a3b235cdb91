"""Nova's libvirt driver, booting guests at their elastic size.

Loaded with ``compute_driver = xloud.XloudLibvirtDriver`` (the module
``nova.virt.xloud`` re-exports this class). It changes these things and
nothing else:

* the generated guest configuration carries the recorded boot size as
  ``<vcpu current>`` and ``<currentMemory>`` (``guest_config``), the flavor
  staying the maximum;
* before any path (re)starts the domain -- spawn (create, rebuild,
  evacuate, unshelve), hard reboot and start and host-boot resume, soft
  reboot, rescue and unrescue, resize and cold migration, revert -- what
  the new domain will start with is claimed in placement (its vCPUs, and
  all of ``<memory>``, which QEMU gives a guest until its balloon driver
  runs; with a virtio-mem device, its RAM and the blocks requested); no
  room fails the operation before the domain starts. Afterwards
  the live size is recorded as the domain reports it, the allocation set
  to it, the persistent definition set to the boot size, and memory still
  on its way down to the boot size is confirmed in the background;
* after a live migration, which keeps the running size, the destination's
  persistent definition is set to the boot size and its allocation to the
  live size;
* at nova-compute start, adjustments a previous run left unfinished are
  ended, and record and placement are set from the domains;
* the elastic sizing RPC endpoint is served by the compute service, and
  each resource update samples the guests' CPU time for readiness
  (``doc/readiness.md``); every start and every live migration's
  arrival is recorded, so readiness can tell a guest migrated since it
  started.
"""

from __future__ import annotations

import os

from lxml import etree
from nova import context as nova_context
from nova import exception, objects, thread_pool_factory, utils
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import utils as libvirt_utils
from oslo_log import log as logging

from nova_ext import conf, placement, sizing
from nova_ext.compute.endpoint import ElasticSizingEndpoint, restart_message
from nova_ext.virt import guest_config, live

LOG = logging.getLogger(__name__)
CONF = conf.CONF


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
        self.elastic_endpoint = None
        if endpoints is not None:
            self.elastic_endpoint = ElasticSizingEndpoint(self, manager.host)
            endpoints.append(self.elastic_endpoint)

    def elastic_domain(self, instance: objects.Instance):
        """The instance's libvirt domain, for nova_ext.virt.live."""
        return self._host.get_guest(instance)._domain

    def elastic_domain_by_uuid(self, instance_uuid: str):
        """The domain of that instance on this host, or None."""
        # The libvirt module Nova's driver uses (a test fixture replaces
        # that one).
        libvirt = libvirt_driver.libvirt
        try:
            return self._host.get_connection().lookupByUUIDString(
                instance_uuid)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def running_domains(self) -> list:
        """The running libvirt domains of this host's instances."""
        return self._host.list_instance_domains(only_running=True)

    def get_available_resource(self, nodename):
        resources = super().get_available_resource(nodename)
        # Nova's resource tracker calls this every
        # update_resources_interval: the CPU time samples readiness
        # averages over ride on it instead of a loop of their own.
        if self.elastic_endpoint is not None:
            try:
                self.elastic_endpoint.sample_cpu_time()
            except Exception:
                LOG.exception('Could not sample the guests\' CPU time')
        return resources

    def host_memory_mb(self) -> tuple[int, int]:
        """This host's memory and how much of it is free or reclaimable
        (page cache, buffers), in MiB, as the kernel counts them."""
        libvirt = libvirt_driver.libvirt
        stats = self._host.get_connection().getMemoryStats(
            libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
        free_kib = sum(int(stats.get(key, 0))
                       for key in ('free', 'buffers', 'cached'))
        return int(stats['total']) // 1024, free_kib // 1024

    def node_provider(self) -> str:
        """This host's compute node, which is its resource provider."""
        return self._host.get_node_uuid()

    def init_host(self, host):
        super().init_host(host)
        # Before Nova's own start-up processing of each instance, which
        # clears the adjustment's task state without a word.
        if self.elastic_endpoint is not None:
            self._reconcile_after_restart(host)
            self.elastic_endpoint.autopilot.start()

    def _get_guest_config(self, instance, network_info, image_meta,
                          disk_info, *args, **kwargs):
        guest = super()._get_guest_config(instance, network_info,
                                          image_meta, disk_info, *args,
                                          **kwargs)
        guest_config.apply_elastic_size(
            guest, _elastic_size(instance))
        return guest

    def spawn(self, context, instance, *args, **kwargs):
        try:
            self._claim_regeneration(context, instance)
        except (placement.InsufficientCapacity,
                placement.AllocationUpdateFailed) as e:
            # Nova reschedules a build for this.
            raise exception.ComputeResourcesUnavailable(
                reason=e.format_message())
        super().spawn(context, instance, *args, **kwargs)
        self._record_started_domain(context, instance)

    def _hard_reboot(self, context, instance, *args, **kwargs):
        # Hard reboot, power_on and resume_state_on_host_boot all rebuild
        # the domain here; soft reboot falls back to it when it fails.
        self._claim_regeneration(context, instance)
        result = super()._hard_reboot(context, instance, *args, **kwargs)
        self._record_started_domain(context, instance)
        return result

    def _soft_reboot(self, instance):
        # The guest shuts down and starts again from its persistent
        # definition (guest.launch()), not from a regenerated one.
        context = nova_context.get_admin_context()
        if self._is_elastic(instance):
            definition = self.elastic_domain(instance).XMLDesc(
                libvirt_driver.libvirt.VIR_DOMAIN_XML_INACTIVE)
            self._claim_start(context, instance, _starts_with(definition))
        rebooted = super()._soft_reboot(instance)
        if rebooted:
            self._record_started_domain(context, instance)
        return rebooted

    def rescue(self, context, instance, *args, **kwargs):
        self._claim_regeneration(context, instance)
        super().rescue(context, instance, *args, **kwargs)
        self._record_started_domain(context, instance)

    def unrescue(self, context, instance):
        # The domain comes back from the XML it had when it was rescued.
        if self._is_elastic(instance):
            path = os.path.join(libvirt_utils.get_instance_path(instance),
                                'unrescue.xml')
            self._claim_start(context, instance, _starts_with(
                libvirt_utils.load_file(path)))
        super().unrescue(context, instance)
        self._record_started_domain(context, instance)

    def finish_migration(self, context, migration, instance, *args,
                         **kwargs):
        self._claim_regeneration(context, instance)
        super().finish_migration(context, migration, instance, *args,
                                 **kwargs)
        self._record_started_domain(context, instance)

    def confirm_migration(self, context, migration, instance, network_info):
        super().confirm_migration(context, migration, instance,
                                  network_info)
        # Nova saves the instance right after; a later resize back to the
        # old flavor starts over from its minimum.
        if _has_record(instance):
            sizing.RecordUpdate().forget_previous_flavor().apply_to(instance)

    def finish_revert_migration(self, context, instance, *args, **kwargs):
        self._claim_regeneration(context, instance)
        super().finish_revert_migration(context, instance, *args, **kwargs)
        self._record_started_domain(context, instance)

    def post_live_migration_at_destination(self, context, instance, *args,
                                           **kwargs):
        super().post_live_migration_at_destination(context, instance,
                                                   *args, **kwargs)
        # The guest kept running at its live size, but its definition
        # here is the migrated live XML, and placement claimed the flavor
        # (or its resources:* override) on this host.
        if self._is_elastic(instance):
            self._record_started_domain(context, instance,
                                        live_migrated=True)

    def _is_elastic(self, instance: objects.Instance) -> bool:
        # Also a flavor whose minimum a setting voids
        # (nova_ext.compatibility): it boots at the flavor's size, while
        # placement may hold only what its resources:* override claimed.
        return (guest_config.is_elastic(_elastic_size(instance)) or
                _has_record(instance) or
                any(sizing.flavor_minimum_spec(instance.flavor, key)
                    for key in (sizing.MINIMUM_CPU, sizing.MINIMUM_MEMORY)))

    def _claim_regeneration(self, context: nova_context.RequestContext,
                            instance: objects.Instance) -> None:
        """Claim what a domain generated from the record starts with."""
        if not self._is_elastic(instance):
            return
        size = _elastic_size(instance)
        # What _get_guest_config will decide: Nova writes the configured
        # virt type (kvm, or qemu for an emulated architecture; both plug
        # virtio-mem), the image's architecture, and a NUMA topology only
        # for an instance that has one.
        plugged = guest_config.gets_virtio_mem(
            size, CONF.libvirt.virt_type,
            self._check_emulation_arch(instance.image_meta),
            numa_topology=instance.numa_topology is not None)
        self._claim_start(context, instance, live.LiveSize(
            size.boot_vcpus,
            size.boot_memory_mb if plugged else size.max_memory_mb))

    def _claim_start(self, context: nova_context.RequestContext,
                     instance: objects.Instance,
                     start: live.LiveSize) -> None:
        """Claim, before the domain starts, what it will start with
        (``start``, see :func:`_starts_with`).

        Raises InsufficientCapacity (the operation's fault) when the host
        has no room: the domain is not started.
        """
        placement.claim_at_least(
            context, instance, start.vcpus, start.memory_mb,
            provider_uuid=self.node_provider())

    def _record_started_domain(self, context: nova_context.RequestContext,
                               instance: objects.Instance,
                               live_migrated: bool = False) -> None:
        """Record the size the domain runs at, and settle placement to it.

        ``live_migrated``: the domain is a running guest that arrived by
        live migration, not one that just started.

        The persistent definition is set to the recorded boot size first:
        a soft reboot, an unrescue or a live migration's destination
        would otherwise start from another. Memory not yet at the boot
        size is confirmed in the background.
        """
        if not self._is_elastic(instance):
            return
        size = _elastic_size(instance)
        domain = self.elastic_domain(instance)
        boot = live.persist_size(domain, size.boot_vcpus,
                                 size.boot_memory_mb)
        running = (live.read_size(domain) if domain.isActive()
                   else boot)
        if domain.isActive() and running.vcpus != size.boot_vcpus and (
                not live_migrated):
            LOG.warning('The domain started with %d vCPUs, not its boot '
                        'size %d; recording what it runs', running.vcpus,
                        size.boot_vcpus, instance=instance)
        # Nova's own copy of the instance, in the middle of Nova's
        # operation: changed and saved as Nova does, not read again.
        update = sizing.RecordUpdate().size(
            instance, vcpus=running.vcpus, memory_mb=running.memory_mb,
            boot_vcpus=boot.vcpus, boot_memory_mb=boot.memory_mb)
        if running.memory_mb == boot.memory_mb:
            # Nothing left for the balloon to answer at this start: what
            # an earlier one showed no longer holds memory back.
            update.balloon(True, boot.memory_mb)
        if live_migrated:
            update.migrated()
        else:
            update.started()
            if sizing.guest_record(instance) is not None:
                # A guest (re)started: what it showed before no longer
                # holds; a live migration keeps the guest running as it
                # was.
                update.forget_guest()
        update.apply_to(instance)
        instance.save()
        if not domain.isActive():
            # Defined, not started (a migration finished with power_on
            # false): its start claims what it starts with.
            return
        self._settle_allocation(context, instance, running.vcpus,
                                running.memory_mb)
        if not live_migrated and running.memory_mb != boot.memory_mb:
            LOG.info('The guest holds %d MiB, its balloon target is %d '
                     'MiB; confirming in the background', running.memory_mb,
                     boot.memory_mb, instance=instance)
            thread_pool_factory.spawn(
                self._confirm_boot_memory, context, instance.obj_clone(),
                boot.memory_mb)

    def _confirm_boot_memory(self, context: nova_context.RequestContext,
                             instance: objects.Instance,
                             memory_mb: int) -> None:
        """Wait for the balloon to reach the boot size; record the outcome.

        Runs on Nova's executor (eventlet or threads alike). The wait
        holds no lock. The record is written under the instance's lock,
        from what the domain reports then, and only while no operation
        owns the instance: one that started meanwhile records the size
        itself when it (re)starts the domain.
        """
        timeout = CONF.xloud.boot_memory_confirm_timeout
        try:
            live.wait_for_memory(self.elastic_domain(instance), memory_mb,
                                 timeout)

            @utils.synchronized(instance.uuid)
            def record() -> None:
                instance.refresh()
                domain = self.elastic_domain(instance)
                if not domain.isActive():
                    LOG.info('The domain stopped before its boot memory '
                             'was confirmed', instance=instance)
                    return
                running = live.read_size(domain)
                try:
                    sizing.save_record(
                        instance, sizing.RecordUpdate().size(
                            instance, vcpus=running.vcpus,
                            memory_mb=running.memory_mb).balloon(
                            running.memory_mb == memory_mb, memory_mb),
                        expected_task_state=[None])
                except exception.UnexpectedTaskStateError:
                    LOG.info('An operation started before the boot memory '
                             'was confirmed; it records the size itself',
                             instance=instance)
                    return
                self._settle_allocation(context, instance, running.vcpus,
                                        running.memory_mb)
                if running.memory_mb == memory_mb:
                    LOG.info('Boot memory of %d MiB confirmed', memory_mb,
                             instance=instance)
                else:
                    LOG.warning(
                        'The guest did not reach its boot memory of %d MiB '
                        'within %gs (is its balloon driver loaded?); '
                        'recorded the %d MiB it holds', memory_mb,
                        timeout, running.memory_mb, instance=instance)

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
        # The guest already runs, with at least this claimed before it
        # started: a failure here leaves the allocation above what the
        # guest uses, never below, and must not undo the operation.
        try:
            # This host's node, which is not yet instance.node while an
            # evacuation spawns the guest here.
            placement.set_allocation(
                context, instance, vcpus, memory_mb,
                provider_uuid=self.node_provider())
        except Exception:
            LOG.exception('Could not set the placement allocation to the '
                          'elastic size %d vCPUs / %d MiB', vcpus,
                          memory_mb, instance=instance)

    def _reconcile_after_restart(self, host: str) -> None:
        """End adjustments the previous run left, settle from the domains.

        A previous nova-compute that died (kill -9, a host crash) left
        its adjustments' task state, status and events unfinished and,
        for a grow, a claim; the domains kept running at whatever libvirt
        had applied.
        """
        context = nova_context.get_admin_context()
        instances = objects.InstanceList.get_by_host(
            context, host, expected_attrs=['flavor', 'system_metadata'])
        for instance in instances:
            if not self._is_elastic(instance):
                continue
            if instance.task_state not in (None,
                                           sizing.ADJUSTING_TASK_STATE):
                # Nova's own start-up processing owns it.
                continue
            try:
                self._reconcile_instance(context, instance, host)
            except Exception:
                LOG.exception('Could not reconcile the elastic size after '
                              'the restart', instance=instance)

    def _reconcile_instance(self, context: nova_context.RequestContext,
                            instance: objects.Instance, host: str) -> None:
        report: dict[str, list[str]] = {'changes': [], 'errors': []}

        @utils.synchronized(instance.uuid)
        def locked() -> None:
            endpoint = self.elastic_endpoint
            if endpoint.interrupted_request(context, instance):
                report['changes'].append(endpoint.end_interrupted(
                    context, instance, restart_message(host)))
            endpoint.settle_from_domain(context, instance, report)

        locked()
        for change in report['changes']:
            LOG.info('After the restart: %s', change, instance=instance)
        for error in report['errors']:
            LOG.warning('After the restart: %s', error, instance=instance)


def _elastic_size(instance: objects.Instance) -> sizing.ElasticSize:
    # Devices count on the host: memory VFIO pins is never ballooned.
    return sizing.ElasticSize.from_instance(instance, devices=True)


def _starts_with(xml: str) -> live.LiveSize:
    """What a domain defined by ``xml`` can use from its start.

    Its vCPUs are exact from the start. With a virtio-mem device its
    memory is its RAM and the blocks requested, which the device plugs
    and no more until it is asked; otherwise all of ``<memory>``, until
    the guest's balloon driver takes the balloon to ``<currentMemory>``.
    """
    definition = live.parse_definition(xml)
    if live.VirtioMem.of(etree.fromstring(xml)) is not None:
        return definition.current
    return live.LiveSize(definition.current.vcpus,
                         definition.maximum.memory_mb)


def _has_record(instance: objects.Instance) -> bool:
    return sizing.SYSMETA_FLAVOR in (instance.system_metadata or {})
