"""The autopilot on nova-compute, in Nova's harness.

Servers run on XloudLibvirtDriver over the fake libvirt; each test drives
what the guests show (the balloon driver's statistics, their CPU time,
the host's free memory) and runs the host's cycles one by one on a clock
it moves a minute per cycle, as ``[xloud_autopilot] interval`` would.
Every change is checked as libvirt, the instance's record, placement and
Nova's instance actions report it.
"""

import time

import fixtures
from nova import context as nova_context
from nova import objects
from oslo_serialization import jsonutils

from nova_ext import autopilot, sizing
from tests.nova import compute_base
from tests.nova import fakelibvirt as elastic_fake

MIB = 1024
AUTO_ACTION = 'xloud-autosize'
AUTO_EVENT = 'compute_xloud_autosize'
KERNEL_MB = elastic_fake.GuestBehaviour.kernel_reserved_kib // MIB


class Clock:
    """A monotonic clock the test moves forward."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


class AutopilotTestBase(compute_base.ElasticAPIComputeTestBase):

    def setUp(self) -> None:
        super().setUp()
        # The guests' balloon statistics once a second: each cycle waits
        # for a fresh set.
        self.flags(mem_stats_period_seconds=1, group='libvirt')
        # The host's own thread does not run a cycle during a test.
        self.flags(mode='on', interval=3600, group='xloud_autopilot')
        self.clock = Clock()
        self.useFixture(fixtures.MonkeyPatch(
            'tests.nova.fakelibvirt.cpu_clock', self.clock))
        self.start_compute('compute1')
        self.runner = self.computes['compute1'].driver \
            .elastic_endpoint.autopilot
        self.runner._clock = self.clock

    def _autosize_flavor(self, autosize: str | None = 'memory',
                         **extra) -> str:
        # 2-4 vCPUs, 2048-4096 MiB.
        spec = {'xloud:minimum_cpu': '2', 'xloud:minimum_memory': '2048',
                **extra}
        if autosize is not None:
            spec['xloud:autosize'] = autosize
        return self._create_flavor(vcpu=4, memory_mb=4096, extra_spec=spec)

    def _boot(self, flavor: str, **behaviour) -> dict:
        if behaviour:
            self.elastic_libvirt.new_guests(**behaviour)
        return self._create_server(flavor_id=flavor, networks='none')

    def _guest(self, server: dict) -> elastic_fake.GuestBehaviour:
        return self._domain(server).behaviour

    def _uses(self, server: dict, memory_mb: int) -> None:
        """The guest's programs use this much memory from now on."""
        self._guest(server).memory_in_use_kib = memory_mb * MIB

    def _cycles(self, count: int, *servers: dict
                ) -> list[list[tuple[str, autopilot.Decision]]]:
        """Run ``count`` cycles a minute apart, each on statistics the
        guests sent since the previous one; what each decided."""
        made = []
        for _cycle in range(count):
            self.clock.now += 60
            for server in servers:
                self._wait_for_statistics(server['id'])
            made.append(self.runner.run_once())
        return made

    def _decisions(self, made, server: dict, dimension: str) -> list[str]:
        return [decision.action for cycle in made
                for uuid, decision in cycle
                if uuid == server['id'] and decision.dimension == dimension]

    def _auto_actions(self, server: dict) -> list[dict]:
        actions = self.api.api_get(
            f'/servers/{server["id"]}/os-instance-actions'
        ).body['instanceActions']
        return [action for action in actions
                if action['action'] == AUTO_ACTION]

    def _auto_event(self, server: dict, action: dict) -> dict:
        shown = self.api.api_get(
            f'/servers/{server["id"]}/os-instance-actions/'
            f'{action["request_id"]}').body['instanceAction']
        events = [event for event in shown['events']
                  if event['event'].startswith(AUTO_EVENT)]
        self.assertEqual(1, len(events), shown)
        return events[0]

    def _show(self, server: dict) -> dict:
        resp = self.api.api_request(f'/os-xloud-adjust/{server["id"]}')
        self.assertEqual(200, resp.status_code, resp.text)
        return resp.json()['server']

    def _set_override(self, server: dict, dimensions, mode):
        return self.api.api_request(
            f'/os-xloud-adjust/{server["id"]}/autopilot', method='PUT',
            body=jsonutils.dumps({'autopilot': {'dimensions': dimensions,
                                                'mode': mode}}),
            headers={'Content-Type': 'application/json'})


class AutopilotMemoryTest(AutopilotTestBase):

    def test_a_guest_short_of_memory_is_grown(self) -> None:
        server = self._boot(self._autosize_flavor())
        self._assert_sizes({'booted': (server['id'], (2, 2048), (2, 2048),
                                       None)})
        # Usable: 2048 - 64 - 1900 = 84 MiB, 4% of it.
        self._uses(server, 1900)
        made = self._cycles(3, server)
        # Three minutes of samples are needed (the first is at 0 s).
        self.assertEqual([autopilot.HOLD] * 3,
                         self._decisions(made, server, autopilot.MEMORY))
        self.assertEqual([], self._auto_actions(server))

        made = self._cycles(1, server)
        self.assertEqual([autopilot.GROW],
                         self._decisions(made, server, autopilot.MEMORY))
        # Aimed at 27.5% usable of what it used at its peak:
        # 1964 / 0.725 = 2709, in 128 MiB steps.
        self._assert_sizes({'grown': (server['id'], (2, 2816), (2, 2816),
                                      None)})
        actions = self._auto_actions(server)
        self.assertEqual(1, len(actions))
        self.assertIsNone(actions[0]['user_id'])
        event = self._auto_event(server, actions[0])
        self.assertEqual('Success', event['result'])
        self.assertEqual(
            'compute_xloud_autosize: memory 2048 → 2816 MiB: usable 4% < '
            '15% for 3 min.', event['event'])
        change = sizing.changes(self._instance(server['id']))[0]
        self.assertEqual(actions[0]['request_id'], change.request_id)
        self.assertEqual(
            'memory_mb 2048 -> 2816, persisted; autopilot: memory 2048 → '
            '2816 MiB: usable 4% < 15% for 3 min.', change.details)
        # At its new size the guest is within the band; the count starts
        # over and nothing changes.
        made = self._cycles(4, server)
        self.assertEqual([autopilot.HOLD] * 4,
                         self._decisions(made, server, autopilot.MEMORY))
        self.assertEqual(1, len(self._auto_actions(server)))
        shown = self._show(server)
        self.assertEqual('on', shown['autopilot']['mode'])
        self.assertEqual(['memory_mb'], shown['autopilot']['dimensions'])
        self.assertEqual('flavor', shown['autopilot']['dimensions_from'])
        self.assertEqual(
            [{'dimension': 'memory_mb', 'action': 'hold', 'current': 2816,
              'target': 2816, 'reason': 'usable 30% within 15-40%.'}],
            shown['autopilot']['decisions'])
        self.assertIsNone(shown['autopilot']['recommended'])

    def test_a_balloon_deflated_on_oom_is_counted_and_grown(self) -> None:
        """A guest out of memory takes pages back from Nova's autodeflate
        balloon: the host records and claims what it holds at the next
        cycle, and the pressure still counts towards a grow."""
        server = self._boot(self._autosize_flavor())
        self._uses(server, 1900)
        self._cycles(1, server)
        self._domain(server).deflate_on_oom(100 * MIB)
        made = self._cycles(1, server)
        self.assertEqual([autopilot.HOLD],
                         self._decisions(made, server, autopilot.MEMORY))
        self._assert_sizes({'deflated': (server['id'], (2, 2148),
                                         (2, 2048), None)})
        made = self._cycles(2, server)
        self.assertEqual([autopilot.HOLD, autopilot.GROW],
                         self._decisions(made, server, autopilot.MEMORY))
        self._assert_sizes({'grown': (server['id'], (2, 2816), (2, 2816),
                                      None)})

    def test_an_idle_guest_is_shrunk(self) -> None:
        self.flags(shrink_after=300, group='xloud_autopilot')
        server = self._boot(self._autosize_flavor())
        # Grown by hand before the autopilot ever saw the guest: no
        # cooldown holds it back.
        self._adjust_through_api(server['id'], memory_mb=4096)
        # Usable: 4096 - 64 - 256 = 3776 MiB, 92% of it.
        made = self._cycles(5, server)
        self.assertEqual([autopilot.HOLD] * 5,
                         self._decisions(made, server, autopilot.MEMORY))
        made = self._cycles(1, server)
        self.assertEqual([autopilot.SHRINK],
                         self._decisions(made, server, autopilot.MEMORY))
        # It used 320 MiB at most: the floor, 2048.
        self._assert_sizes({'shrunk': (server['id'], (2, 2048), (2, 2048),
                                       None)})
        event = self._auto_event(server, self._auto_actions(server)[0])
        self.assertEqual('compute_xloud_autosize: memory 4096 → 2048 MiB: '
                         'usable 92% > 40% for 5 min.', event['event'])

    def test_a_grow_over_the_project_quota_is_skipped(self) -> None:
        self.flags(count_usage_from_placement=True, group='quota')
        server = self._boot(self._autosize_flavor())
        # Room for 512 MiB more, the grow needs 768.
        self.flags(ram=2048 + 512, group='quota')
        self._uses(server, 1900)
        made = self._cycles(4, server)
        decision = made[-1][0][1]
        self.assertEqual(autopilot.SKIPPED, decision.action)
        self.assertEqual(
            'memory 2048 → 2816 MiB: usable 4% < 15% for 3 min; skipped: '
            'over the project\'s quota: Quota exceeded for ram: Requested '
            '768, but already used 2048 of 2560 ram.', decision.reason)
        self._assert_sizes({'held': (server['id'], (2, 2048), (2, 2048),
                                     None)})
        self.assertEqual([], self._auto_actions(server))
        # The API shows what was skipped, and why.
        shown = self._show(server)['autopilot']['decisions']
        self.assertEqual('skipped', shown[0]['action'])
        self.assertEqual(decision.reason, shown[0]['reason'])

    def test_a_grow_beyond_the_host_is_skipped(self) -> None:
        server = self._boot(self._autosize_flavor())
        self._set_provider_capacity(
            'compute1', 'MEMORY_MB',
            self._provider_usage('compute1')['MEMORY_MB'] + 512)
        self._uses(server, 1900)
        made = self._cycles(4, server)
        decision = made[-1][0][1]
        self.assertEqual(autopilot.SKIPPED, decision.action)
        self.assertEqual(
            'memory 2048 → 2816 MiB: usable 4% < 15% for 3 min; skipped: '
            'it needs 768 more and placement has 512 free on the host.',
            decision.reason)
        self._assert_sizes({'held': (server['id'], (2, 2048), (2, 2048),
                                     None)})
        self.assertEqual([], self._auto_actions(server))

    def test_recommend_mode_changes_nothing(self) -> None:
        self.flags(mode='recommend', group='xloud_autopilot')
        server = self._boot(self._autosize_flavor())
        self._uses(server, 1900)
        made = self._cycles(6, server)
        self.assertEqual([autopilot.HOLD] * 3 + [autopilot.GROW] * 3,
                         self._decisions(made, server, autopilot.MEMORY))
        self._assert_sizes({'held': (server['id'], (2, 2048), (2, 2048),
                                     None)})
        self.assertEqual([], self._auto_actions(server))
        shown = self._show(server)['autopilot']
        self.assertEqual('recommend', shown['mode'])
        self.assertEqual({'vcpus': None, 'memory_mb': 2816},
                         shown['recommended'])

    def test_host_short_of_memory_shrinks_idle_guests_first(self) -> None:
        self.flags(host_memory_reserve_percent=50, group='xloud_autopilot')
        flavor = self._autosize_flavor()
        idle = self._boot(flavor)
        busy = self._boot(flavor)
        self._adjust_through_api(idle['id'], memory_mb=4096)
        self._uses(busy, 1900)
        connection = self._connection('compute1')
        total_kib = connection.host_info.kB_mem
        # The host itself holds all but 40% of its memory beside them.
        connection.host_used_kib = int(total_kib * 0.6) - (4096 + 2048) * MIB
        made = self._cycles(4, idle, busy)
        final = dict(made[-1])
        # Idle for 3 min is enough on a host short of memory.
        self.assertEqual(autopilot.SHRINK, final[idle['id']].action)
        self.assertIn('the host short of memory', final[idle['id']].reason)
        # What the shrink freed (2048 MiB) does not bring the host back
        # above its reserve: the grow is skipped.
        self.assertEqual(autopilot.SKIPPED, final[busy['id']].action)
        self.assertIn('in reserve', final[busy['id']].reason)
        self.assertEqual([idle['id'], busy['id']],
                         [uuid for uuid, _decision in made[-1]])
        self._assert_sizes({
            'idle': (idle['id'], (2, 2048), (2, 2048), None),
            'busy': (busy['id'], (2, 2048), (2, 2048), None)})


class AutopilotSettingTest(AutopilotTestBase):

    def test_the_flavor_opts_in(self) -> None:
        server = self._boot(self._autosize_flavor(autosize=None))
        self._uses(server, 1900)
        made = self._cycles(4, server)
        self.assertEqual([], [decision for cycle in made
                              for decision in cycle])
        shown = self._show(server)['autopilot']
        self.assertEqual([], shown['dimensions'])
        self.assertEqual('off', shown['mode'])

    def test_an_instance_override(self) -> None:
        server = self._boot(self._autosize_flavor(autosize=None))
        resp = self._set_override(server, ['memory_mb'], 'recommend')
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual({'dimensions': ['memory_mb'],
                          'dimensions_from': 'instance',
                          'instance_mode': 'recommend'},
                         resp.json()['autopilot'])
        self._uses(server, 1900)
        made = self._cycles(4, server)
        self.assertEqual([autopilot.GROW],
                         self._decisions(made[-1:], server,
                                         autopilot.MEMORY))
        # Recommended, not made: the instance's mode is below the host's.
        self._assert_sizes({'held': (server['id'], (2, 2048), (2, 2048),
                                     None)})
        resp = self._set_override(server, None, None)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual({'dimensions': [], 'dimensions_from': None,
                          'instance_mode': None}, resp.json()['autopilot'])

    def test_an_instance_opts_out(self) -> None:
        server = self._boot(self._autosize_flavor())
        resp = self._set_override(server, [], None)
        self.assertEqual(200, resp.status_code, resp.text)
        self._uses(server, 1900)
        made = self._cycles(4, server)
        self.assertEqual([], [decision for cycle in made
                              for decision in cycle])

    def test_bad_overrides_change_nothing(self) -> None:
        pinned = self._create_flavor(
            vcpu=2, memory_mb=4096,
            extra_spec={'hw:cpu_policy': 'dedicated'})
        self.flags(cpu_dedicated_set='0-3', group='compute')
        self.restart_compute_service('compute1')
        server = self._boot(pinned)
        resp = self._set_override(server, ['vcpus'], None)
        self.assertEqual(409, resp.status_code, resp.text)
        self.assertIn(f'vcpus of server {server["id"]} cannot be sized '
                      f'automatically', resp.text)
        for body in ({'dimensions': ['disk'], 'mode': None},
                     {'dimensions': None, 'mode': 'always'},
                     {'dimensions': ['memory_mb', 'memory_mb'],
                      'mode': None},
                     {'mode': None}):
            resp = self.api.api_request(
                f'/os-xloud-adjust/{server["id"]}/autopilot', method='PUT',
                body=jsonutils.dumps({'autopilot': body}),
                headers={'Content-Type': 'application/json'})
            self.assertEqual(400, resp.status_code, (body, resp.text))
        sysmeta = self._instance(server['id']).system_metadata
        self.assertNotIn(sizing.SYSMETA_AUTOSIZE, sysmeta)
        self.assertNotIn(sizing.SYSMETA_AUTOSIZE_MODE, sysmeta)

    def test_the_autosize_spec_is_validated(self) -> None:
        flavor = self._create_flavor(vcpu=4, memory_mb=4096)
        # Nova validates extra specs from microversion 2.86 on.
        self.api.microversion = '2.86'
        self.addCleanup(setattr, self.api, 'microversion', self.microversion)
        resp = self.api.api_request(
            f'/flavors/{flavor}/os-extra_specs', method='POST',
            body=jsonutils.dumps({'extra_specs': {
                'xloud:autosize': 'disk'}}),
            headers={'Content-Type': 'application/json'})
        self.assertEqual(400, resp.status_code, resp.text)
        self.assertIn("'disk' is not one of: memory, cpu, memory,cpu",
                      resp.text)
        self.assertEqual({}, self.api.api_get(
            f'/flavors/{flavor}/os-extra_specs').body['extra_specs'])


class AutopilotCpuTest(AutopilotTestBase):

    def test_a_busy_guest_gets_a_vcpu(self) -> None:
        server = self._boot(self._autosize_flavor(autosize='cpu'),
                            busy_vcpus=1.9)
        made = self._cycles(5, server)
        # The first cycle has nothing to measure busy vCPUs from.
        self.assertEqual([autopilot.HOLD] * 4 + [autopilot.GROW],
                         self._decisions(made, server, autopilot.VCPUS))
        self._assert_sizes({'grown': (server['id'], (3, 2048), (3, 2048),
                                      None)})
        event = self._auto_event(server, self._auto_actions(server)[0])
        self.assertEqual('compute_xloud_autosize: vcpus 2 → 3: 1.9 of 2 '
                         'busy (95% > 80%) for 3 min.', event['event'])
        # A manual change starts the count over.
        self._adjust_through_api(server['id'], vcpus=4)
        made = self._cycles(3, server)
        self.assertEqual([autopilot.HOLD] * 3,
                         self._decisions(made, server, autopilot.VCPUS))


    def test_a_busy_guest_on_a_contended_host_is_not_grown(self) -> None:
        server = self._boot(self._autosize_flavor(autosize='cpu'),
                            busy_vcpus=1.9, steal_vcpus=0.5)
        made = self._cycles(5, server)
        self.assertEqual([autopilot.HOLD] * 5,
                         self._decisions(made, server, autopilot.VCPUS))
        self.assertEqual('1.9 of 2 busy (95% > 80%) for 3 min, but the host '
                         'keeps 0.5 of its vCPUs waiting (steal 25% > 10%).',
                         made[-1][0][1].reason)
        self._assert_sizes({'held': (server['id'], (2, 2048), (2, 2048),
                                     None)})

    def test_vcpus_are_held_while_some_are_offline_in_the_guest(
            self) -> None:
        image = self._create_image({'hw_qemu_guest_agent': 'yes'})['id']
        self.elastic_libvirt.new_guests(busy_vcpus=1.9)
        server = self._create_server(
            flavor_id=self._autosize_flavor(autosize='cpu'),
            image_uuid=image, networks='none')
        # The guest took its second vCPU offline (its agent says so).
        self._domain(server).setGuestVcpus('1', 0)
        made = self._cycles(5, server)
        self.assertEqual([autopilot.HOLD] * 5,
                         self._decisions(made, server, autopilot.VCPUS))
        self.assertEqual('The guest runs 1 of its 2 vCPUs online; vCPUs are '
                         'not sized until it runs them all.',
                         made[-1][0][1].reason)
        self._assert_sizes({'held': (server['id'], (2, 2048), (2, 2048),
                                     None)})
        # Back online, and still busy: grown once the count allows.
        self._domain(server).setGuestVcpus('1', 1)
        made = self._cycles(1, server)
        self.assertEqual([autopilot.GROW],
                         self._decisions(made, server, autopilot.VCPUS))

class AutopilotRestartTest(AutopilotTestBase):

    def test_an_automatic_adjustment_cut_by_a_restart_is_ended(self) -> None:
        """What nova-compute leaves when it dies in an automatic
        adjustment: the task state, the action and its started event, the
        record in progress. Its restart ends them, as for a manual one."""
        server = self._boot(self._autosize_flavor())
        instance = self._instance(server['id'])
        context = nova_context.get_admin_context()
        context.project_id = instance.project_id
        reason = 'memory 2048 → 2816 MiB: usable 4% < 15% for 3 min.'
        instance.task_state = sizing.ADJUSTING_TASK_STATE
        instance.save(expected_task_state=[None])
        objects.InstanceAction.action_start(
            context, instance.uuid, sizing.AUTO_ACTION, want_result=False)
        objects.InstanceActionEvent.event_start(
            context, instance.uuid, sizing.auto_event(reason),
            want_result=False, host='compute1')
        sizing.save_record(instance, sizing.RecordUpdate().status(
            sizing.STATUS_ADJUSTING, context.request_id))

        self.restart_compute_service('compute1')
        event = self._auto_event(server, self._auto_actions(server)[0])
        self.assertEqual('Error', event['result'])
        self.assertEqual(f'{AUTO_EVENT}: {reason}', event['event'])
        self.assertIn('nova-compute on compute1 restarted', event['details'])
        self.assertIsNone(
            self.api.get_server(server['id'])['OS-EXT-STS:task_state'])
        self._assert_sizes({'held': (server['id'], (2, 2048), (2, 2048),
                                     None)})
