"""The guest's own view of an adjustment, through the QEMU guest agent.

An image with ``hw_qemu_guest_agent=yes`` gets the agent's channel in its
domain (Nova adds it); the fake libvirt answers the agent's calls as
libvirt's QEMU driver does, for a guest that onlines hot-plugged vCPUs
itself (a udev rule), one that does not, and one whose agent does not run.
Every adjustment goes through ``POST /os-xloud-adjust`` and is read back
from its action event, the instance's change record and
``GET /os-xloud-adjust/{id}``.
"""

from nova.tests.fixtures import libvirt as nova_fakelibvirt

from nova_ext import sizing
from nova_ext.virt import live
from tests.nova import compute_base
from tests.nova import fakelibvirt as elastic_fake

MIB = 1024
# The fake guest's kernel keeps 64 MiB of its memory, its programs use 256.
KERNEL_RESERVED_MB = elastic_fake.GuestBehaviour.kernel_reserved_kib // MIB
IN_USE_MB = elastic_fake.GuestBehaviour.memory_in_use_kib // MIB


class GuestViewTest(compute_base.ElasticAPIComputeTestBase):

    def setUp(self) -> None:
        super().setUp()
        # A guest without the udev rule gets this long before the agent
        # onlines its vCPUs.
        self.flags(guest_vcpu_online_timeout=0.2, group='xloud')
        self.flags(memory_confirm_timeout=0.5, group='xloud')
        self.host = self.start_compute('compute1')
        self.flavor = self._create_elastic_flavor()

    def _boot(self, agent: bool = True, **behaviour) -> dict:
        if behaviour:
            self.elastic_libvirt.new_guests(**behaviour)
        image = None
        if agent:
            image = self._create_image({'hw_qemu_guest_agent': 'yes'})['id']
        return self._create_server(flavor_id=self.flavor, image_uuid=image,
                                   networks='none')

    def _show(self, server_id: str) -> dict:
        resp = self.api.api_request(f'/os-xloud-adjust/{server_id}')
        self.assertEqual(200, resp.status_code, resp.text)
        return resp.json()['server']

    def _guest_online(self, server: dict) -> str:
        return self._domain(server).guestVcpus()['online']

    def _latest_change(self, server_id: str) -> str:
        return sizing.changes(self._instance(server_id))[0].details

    def test_guest_that_onlines_its_vcpus_itself(self) -> None:
        server = self._boot()
        self.assertEqual('0-1', self._guest_online(server))

        self._adjust_through_api(server['id'], vcpus=4, persist=False)
        self.assertEqual('0-3', self._guest_online(server))
        # Nothing for the agent to do.
        self.assertEqual('vcpus 2 -> 4, not persisted',
                         self._latest_change(server['id']))
        shown = self._show(server['id'])
        self.assertEqual(sizing.STATUS_SUCCESS,
                         shown['adjustment']['status'])
        guest = shown['guest']
        self.assertIsNotNone(guest.pop('as_of'))
        # Nova's default [libvirt] mem_stats_period_seconds is 10: the
        # balloon driver's statistics flow. Nova's balloon deflates on
        # OOM, so the guest's total keeps the flavor's 4096 MiB; what its
        # programs can use follows the balloon.
        self.assertEqual({
            'agent': sizing.GUEST_AGENT_ANSWERING, 'online_vcpus': 4,
            'available_memory_mb': 4096 - KERNEL_RESERVED_MB,
            'usable_memory_mb': 2048 - KERNEL_RESERVED_MB - IN_USE_MB,
        }, guest)

    def test_agent_onlines_what_the_guest_does_not(self) -> None:
        server = self._boot(onlines_vcpus=False)

        self._adjust_through_api(server['id'], vcpus=4, persist=False)
        self.assertEqual('0-3', self._guest_online(server))
        self.assertEqual('vcpus 2 -> 4, not persisted; the guest agent '
                         'onlined vCPUs 2,3',
                         self._latest_change(server['id']))
        shown = self._show(server['id'])
        self.assertEqual((sizing.STATUS_SUCCESS, 4),
                         (shown['adjustment']['status'],
                          shown['guest']['online_vcpus']))

        # Before an unplug the agent takes the leaving vCPUs offline.
        self._adjust_through_api(server['id'], vcpus=3, persist=False)
        self.assertEqual('vcpus 4 -> 3, not persisted; the guest agent '
                         'offlined vCPUs 3',
                         self._latest_change(server['id']))
        self.assertEqual('0-2', self._guest_online(server))
        self.assertEqual(3, self._show(server['id'])['guest']['online_vcpus'])
        self._assert_sizes({'guest': (server['id'], (3, 2048), (2, 2048),
                                      None)})

    def test_guest_keeping_vcpus_offline_is_partial(self) -> None:
        server = self._boot(onlines_vcpus=False)
        elastic_fake.ElasticLibvirtFixture.refuse_next(
            self._connection('compute1'), server['id'], 'setGuestVcpus',
            'internal error: unable to execute QEMU agent command '
            "'guest-set-vcpus': Invalid parameter 'logical-id'")

        event = self._adjust_through_api(server['id'], vcpus=3,
                                         persist=False, result='Error')
        self.assertIn('vcpus 2 -> 3 applied (not persisted), but the guest '
                      'runs 2 of its 3 vCPUs online', event['details'])
        self.assertIn("'guest-set-vcpus'", event['details'])
        self.assertEqual('0-1', self._guest_online(server))
        # libvirt gave the guest 3: record and placement count them.
        self._assert_sizes({'guest': (server['id'], (3, 2048), (2, 2048),
                                      None)})
        shown = self._show(server['id'])
        self.assertEqual(sizing.STATUS_PARTIAL,
                         shown['adjustment']['status'])
        self.assertIn('2 of its 3 vCPUs', shown['adjustment']['error'])
        self.assertEqual((sizing.GUEST_AGENT_ANSWERING, 2),
                         (shown['guest']['agent'],
                          shown['guest']['online_vcpus']))
        self.assertTrue(self._latest_change(server['id']).startswith(
            'partial, applied vcpus 2 -> 3, not persisted: the guest runs 2 '
            'of its 3 vCPUs online; the guest agent failed: internal error'),
            self._latest_change(server['id']))

        # The next grow onlines every vCPU the guest still has offline.
        self._adjust_through_api(server['id'], vcpus=4, persist=False)
        self.assertEqual('0-3', self._guest_online(server))
        self.assertEqual('vcpus 3 -> 4, not persisted; the guest agent '
                         'onlined vCPUs 2,3',
                         self._latest_change(server['id']))
        shown = self._show(server['id'])
        self.assertEqual((sizing.STATUS_SUCCESS, 4),
                         (shown['adjustment']['status'],
                          shown['guest']['online_vcpus']))

    def test_without_an_answering_agent_a_grow_is_partial(self) -> None:
        server = self._boot(guest_agent=False, onlines_vcpus=False)

        event = self._adjust_through_api(server['id'], vcpus=4,
                                         persist=True, result='Error')
        self.assertIn('vcpus 2 -> 4 applied (persisted), but whether the '
                      'guest runs its new vCPUs online is not known: Guest '
                      'agent is not responding: QEMU guest agent is not '
                      'connected', event['details'])
        self._assert_sizes({'guest': (server['id'], (4, 2048), (4, 2048),
                                      None)})
        shown = self._show(server['id'])
        self.assertEqual(sizing.STATUS_PARTIAL,
                         shown['adjustment']['status'])
        self.assertEqual((sizing.GUEST_AGENT_NOT_ANSWERING, None),
                         (shown['guest']['agent'],
                          shown['guest']['online_vcpus']))
        # The balloon statistics come from the balloon driver, not the
        # agent.
        self.assertEqual(2048 - KERNEL_RESERVED_MB - IN_USE_MB,
                         shown['guest']['usable_memory_mb'])

        # A shrink libvirt confirms needs no word from the guest.
        self._adjust_through_api(server['id'], vcpus=2, persist=False)
        self.assertEqual(sizing.STATUS_SUCCESS,
                         self._show(server['id'])['adjustment']['status'])

    def test_image_without_agent_is_taken_at_libvirts_word(self) -> None:
        server = self._boot(agent=False, onlines_vcpus=False)
        self._adjust_through_api(server['id'], vcpus=4, persist=False)
        shown = self._show(server['id'])
        self.assertEqual(sizing.STATUS_SUCCESS,
                         shown['adjustment']['status'])
        self.assertEqual((sizing.GUEST_AGENT_NOT_CONFIGURED, None),
                         (shown['guest']['agent'],
                          shown['guest']['online_vcpus']))

    def test_memory_not_reached(self) -> None:
        server = self._boot()
        # The balloon driver stops answering (unloaded, a hung guest).
        elastic_fake.ElasticLibvirtFixture.behaviour(
            self._connection('compute1'), server['id']).balloon_driver = False

        event = self._adjust_through_api(server['id'], vcpus=3,
                                         memory_mb=3072, persist=False,
                                         result='Error')
        self.assertIn('memory change to 3072 MiB not confirmed',
                      event['details'])
        self.assertIn('applied: vcpus 2 -> 3', event['details'])
        shown = self._show(server['id'])
        self.assertEqual(sizing.STATUS_ERROR, shown['adjustment']['status'])
        self.assertEqual(
            {'agent': sizing.GUEST_AGENT_ANSWERING, 'online_vcpus': 3,
             # What the driver sent last, moments ago, before it stopped:
             # the guest still holds its 2048 MiB.
             'available_memory_mb': 4096 - KERNEL_RESERVED_MB,
             'usable_memory_mb': 2048 - KERNEL_RESERVED_MB - IN_USE_MB},
            {key: shown['guest'][key] for key in (
                'agent', 'online_vcpus', 'available_memory_mb',
                'usable_memory_mb')})
        self._assert_sizes({'guest': (server['id'], (3, 2048), (2, 2048),
                                      None)})

    def test_memory_change_is_not_partial_for_vcpus_offline_before(
            self) -> None:
        server = self._boot()
        # The guest took vCPU 1 offline itself (or did not finish an
        # unplug): nothing this memory change did.
        self._domain(server).setGuestVcpus('1', 0, 0)
        self._adjust_through_api(server['id'], memory_mb=3072,
                                 persist=False)
        shown = self._show(server['id'])
        self.assertEqual(sizing.STATUS_SUCCESS,
                         shown['adjustment']['status'])
        self.assertIn('The guest runs 1 of its 2 vCPUs online',
                      shown['readiness']['warnings'][0])
        # A vCPU grow has the agent online every vCPU the guest keeps
        # offline, the old one too.
        self._adjust_through_api(server['id'], vcpus=3, persist=False)
        self.assertEqual('0-2', self._guest_online(server))
        self.assertEqual([], self._show(server['id'])['readiness'][
            'warnings'])

    def test_a_restart_forgets_what_the_guest_showed(self) -> None:
        server = self._boot()
        self._adjust_through_api(server['id'], vcpus=3, persist=False)
        self.assertEqual(3, self._show(server['id'])['guest']['online_vcpus'])
        self.assertIsNotNone(sizing.guest_record(
            self._instance(server['id'])))
        self._reboot_server(server, hard=True)
        self.assertIsNone(sizing.guest_record(self._instance(server['id'])))
        # The single GET reads the guest afresh: it runs its boot size.
        self.assertEqual(2, self._show(server['id'])['guest']['online_vcpus'])


class FakeAgentTest(compute_base.ElasticComputeTestBase):
    """The agent calls of the fake on a domain Nova generated."""

    def setUp(self) -> None:
        super().setUp()
        self.start_compute('compute1')
        flavor = self._create_elastic_flavor()
        image = self._create_image({'hw_qemu_guest_agent': 'yes'})['id']
        self.server = self._create_server(flavor_id=flavor, image_uuid=image,
                                          networks='none')
        self.domain = self._domain(self.server)

    def _create_elastic_flavor(self) -> str:
        return self._create_flavor(
            vcpu=4, memory_mb=4096,
            extra_spec={'xloud:minimum_cpu': '2',
                        'xloud:minimum_memory': '2048'})

    def _refused(self, call, *args) -> tuple[int, str]:
        try:
            call(*args)
        except nova_fakelibvirt.libvirtError as e:
            return e.get_error_code(), str(e)
        self.fail(f'{call.__name__}{args} was not refused')

    def test_agent_calls(self) -> None:
        self.assertEqual({'vcpus': '0-1', 'online': '0-1',
                          'offlinable': '1'}, self.domain.guestVcpus())
        self.assertEqual((nova_fakelibvirt.VIR_ERR_OPERATION_UNSUPPORTED,
                          "Operation not supported: vCPU '0' is not "
                          "offlinable"),
                         self._refused(self.domain.setGuestVcpus, '0-1', 0))
        self.assertEqual((nova_fakelibvirt.VIR_ERR_INVALID_ARG,
                          "invalid argument: guest is missing vCPUs '2-3'"),
                         self._refused(self.domain.setGuestVcpus, '1-3', 1))
        self.assertEqual((nova_fakelibvirt.VIR_ERR_INVALID_ARG,
                          "invalid argument: Failed to parse bitmap '1-x'"),
                         self._refused(self.domain.setGuestVcpus, '1-x', 1))
        self.assertEqual(0, self.domain.setGuestVcpus('1', 0))
        self.assertEqual('0', self.domain.guestVcpus()['online'])
        self.assertEqual(0, self.domain.setGuestVcpus('0-1,^0', 1))
        self.assertEqual('0-1', self.domain.guestVcpus()['online'])

        self.domain.behaviour.guest_agent = False
        self.assertIsNone(self.domain.guestVcpus())
        self.assertEqual(
            (nova_fakelibvirt.VIR_ERR_AGENT_UNRESPONSIVE,
             'Guest agent is not responding: QEMU guest agent is not '
             'connected'),
            nova_fakelibvirt.virGetLastError()[0:3:2])
        self.assertEqual((nova_fakelibvirt.VIR_ERR_AGENT_UNRESPONSIVE,
                          'Guest agent is not responding: QEMU guest agent '
                          'is not connected'),
                         self._refused(self.domain.setGuestVcpus, '1', 1))
        channel = self._domain_xml(self.server).find(
            "devices/channel/target[@name='org.qemu.guest_agent.0']")
        self.assertEqual('disconnected', channel.get('state'))

    def test_paused_guest_has_no_agent(self) -> None:
        self.domain.suspend()
        self.assertIsNone(self.domain.guestVcpus())
        self.assertEqual(
            (nova_fakelibvirt.VIR_ERR_OPERATION_INVALID,
             'Requested operation is not valid: domain is not running'),
            nova_fakelibvirt.virGetLastError()[0:3:2])

    def test_memory_statistics_follow_the_period(self) -> None:
        stats = self.domain.memoryStats()
        self.assertEqual(2048 * MIB, stats['actual'])
        self.assertGreater(stats['last_update'], 0)
        self.assertEqual(2048 - KERNEL_RESERVED_MB - IN_USE_MB,
                         live.read_guest(self.domain).usable_memory_mb)
        # No period: QEMU keeps what the driver sent last, and the guest's
        # view no longer counts it.
        self.domain.setMemoryStatsPeriod(
            0, nova_fakelibvirt.VIR_DOMAIN_AFFECT_LIVE)
        self.domain.setMemoryFlags(3072 * MIB,
                                   nova_fakelibvirt.VIR_DOMAIN_AFFECT_LIVE)
        self.assertEqual({**stats, 'actual': 3072 * MIB},
                         self.domain.memoryStats())
        self.assertIsNone(live.read_guest(self.domain).usable_memory_mb)
        self.assertEqual(
            '10', self._domain_xml(self.server, compute_base.INACTIVE).find(
                'devices/memballoon/stats').get('period'))
        self.domain.setMemoryStatsPeriod(
            5, nova_fakelibvirt.VIR_DOMAIN_AFFECT_LIVE)
        self.assertEqual(3072 - KERNEL_RESERVED_MB - IN_USE_MB,
                         live.read_guest(self.domain).usable_memory_mb)

    def test_statistics_of_a_guest_without_balloon_driver(self) -> None:
        # QEMU has nothing from the driver: last_update 0.
        self.elastic_libvirt.new_guests(balloon_driver=False)
        self._reboot_server(self.server, hard=True)
        domain = self._domain(self.server)
        self.assertEqual({'actual': 4096 * MIB, 'last_update': 0},
                         domain.memoryStats())
        self.assertIsNone(live.read_guest(domain).usable_memory_mb)
