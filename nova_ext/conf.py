"""Configuration options of the elastic sizing extension (``[xloud]``,
and its autopilot's ``[xloud_autopilot]``).

Registered on Nova's own ``CONF`` when a module that reads them is
imported; listed for ``oslo-config-generator --namespace xloud`` through
the ``oslo.config.opts`` entry point.
"""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    'xloud', title='Elastic sizing',
    help='Live vCPU and memory adjustment of instances within their '
         'flavor\'s minimum and maximum.')

OPTS = [
    cfg.IntOpt(
        'accept_timeout', default=30, min=1,
        help='Seconds nova-api waits for the compute host to accept an '
             'adjustment. A host that does not answer in time (down, '
             'stuck, or running the stock libvirt driver) ends the '
             'request with an error and changes nothing; the compute '
             'host drops a request that reaches it later.'),
    cfg.FloatOpt(
        'memory_confirm_timeout', default=15.0, min=0.0,
        help='Seconds a running guest is given to reach a new balloon '
             'target. A guest that does not reach it in time (no balloon '
             'driver, paused, under memory pressure) has the target set '
             'back to what it holds, and the adjustment fails as not '
             'confirmed.'),
    cfg.FloatOpt(
        'boot_memory_confirm_timeout', default=120.0, min=0.0,
        help='Seconds a guest just (re)started is given to reach its boot '
             'memory. QEMU starts every guest with all of the flavor\'s '
             'memory, and placement counts all of it until the balloon is '
             'confirmed at the boot memory.'),
    cfg.FloatOpt(
        'guest_vcpu_online_timeout', default=5.0, min=0.0,
        help='Seconds a guest that runs the QEMU guest agent (image '
             'property hw_qemu_guest_agent=yes) is given to bring '
             'hot-plugged vCPUs online itself, as a udev rule does at '
             'once. vCPUs still offline then are onlined through the '
             'agent; a guest without an answering agent keeps them as it '
             'has them, and the adjustment is reported as partial.'),
    cfg.BoolOpt(
        'allow_shrink_without_minimum', default=False,
        help='Whether instances of a flavor without '
             'xloud:minimum_cpu / xloud:minimum_memory may be adjusted '
             'below the flavor\'s size (down to vcpu_floor and '
             'memory_floor_mb). Without it such flavors are not elastic: '
             'their instances keep the size the flavor promises.'),
    cfg.IntOpt(
        'vcpu_floor', default=1, min=1,
        help='The fewest vCPUs an instance of a flavor without '
             'xloud:minimum_cpu may be adjusted to, when '
             'allow_shrink_without_minimum is set.'),
    cfg.IntOpt(
        'memory_floor_mb', default=256, min=1,
        help='The least memory, in MiB, any instance runs with, whatever '
             'its flavor\'s xloud:minimum_memory says (a guest whose '
             'balloon leaves it a few MiB is dead). Flavors smaller than '
             'this are not shrunk at all.'),
    cfg.IntOpt(
        'readiness_timeout', default=10, min=1,
        help='Seconds nova-api waits for a compute host to describe its '
             'guests\' readiness (GET /os-xloud-adjust/{id}, and the list '
             'with readiness=true, which asks each host once). A host that '
             'does not answer in time is reported as not read.'),
    cfg.IntOpt(
        'balloon_silent_after', default=120, min=0,
        help='Seconds after a guest started (plus two statistics periods, '
             '[libvirt] mem_stats_period_seconds) after which a guest whose '
             'balloon driver has sent no statistics is taken to have no '
             'balloon driver: its memory is reported as not adjustable.'),
    cfg.IntOpt(
        'utilisation_window_seconds', default=300, min=60,
        help='Seconds over which a guest\'s busy vCPUs are averaged, from '
             'the CPU time libvirt counts; sampled at each resource update '
             '([DEFAULT] update_resources_interval) and each readiness '
             'read.'),
    cfg.IntOpt(
        'recommend_memory_headroom_percent', default=20, min=0, max=90,
        help='The share of its memory a recommended size leaves free above '
             'what the guest uses (its balloon size less what it reports '
             'usable).'),
    cfg.IntOpt(
        'recommend_spare_vcpus', default=1, min=0,
        help='vCPUs a recommended size adds above those the guest keeps '
             'busy on average.'),
    cfg.IntOpt(
        'audit_rpc_timeout', default=60, min=1,
        help='Seconds the audit waits for each compute host to describe '
             'its domains or heal an instance.'),
]

AUTOPILOT_GROUP = cfg.OptGroup(
    'xloud_autopilot', title='Elastic sizing autopilot',
    help='Automatic vCPU and memory sizing of instances within their '
         'flavor\'s minimum and maximum, from the guest\'s own balloon '
         'statistics and CPU time (doc/autopilot.md).')

AUTOPILOT_OPTS = [
    cfg.StrOpt(
        'mode', default='off',
        choices=[
            ('off', 'Nothing is decided.'),
            ('recommend', 'The size the autopilot would choose is computed '
                          'and shown; nothing is changed.'),
            ('on', 'The instances that opted in are adjusted.'),
        ],
        help='The autopilot\'s global switch.'),
    cfg.IntOpt(
        'interval', default=60, min=10, max=3600,
        help='Seconds between two runs of the autopilot on a compute '
             'host; each run takes one sample of every guest. A guest '
             'whose newest sample is older than two intervals is not '
             'changed.'),
    cfg.IntOpt(
        'min_samples', default=3, min=2, max=100,
        help='The fewest samples of a guest at its current size the '
             'autopilot needs before it changes that size.'),
    cfg.IntOpt(
        'max_samples', default=64, min=2, max=1000,
        help='The most samples kept per guest (the oldest are dropped). '
             'Must be at least min_samples and should cover shrink_after '
             'at one sample per interval.'),
    cfg.IntOpt(
        'window_seconds', default=1800, min=60, max=86400,
        help='Seconds of samples kept per guest. Must be at least '
             'shrink_after.'),
    cfg.IntOpt(
        'memory_low_percent', default=15, min=1, max=89,
        help='Memory grows when the share of it the guest reports usable '
             '(balloon statistics, its MemAvailable) stays below this '
             'for grow_after seconds. Must be below memory_high_percent.'),
    cfg.IntOpt(
        'memory_high_percent', default=40, min=2, max=90,
        help='Memory shrinks when the share of it the guest reports '
             'usable stays above this for shrink_after seconds. Grows and '
             'shrinks aim at the middle of the low and high percents.'),
    cfg.FloatOpt(
        'major_faults_per_second', default=100.0, min=0.0, max=1000000.0,
        help='Memory also grows when the guest takes more major page '
             'faults per second than this (balloon statistics), for '
             'grow_after seconds. 0 ignores them.'),
    cfg.FloatOpt(
        'swap_in_kib_per_second', default=1024.0, min=0.0,
        max=10000000.0,
        help='Memory also grows when the guest swaps in more KiB per '
             'second than this (balloon statistics), for grow_after '
             'seconds. 0 ignores it.'),
    cfg.IntOpt(
        'memory_min_step_mb', default=256, min=128, max=1048576,
        help='The least memory, in MiB, one change adds or takes away; a '
             'multiple of 128. A shrink that would free less is not '
             'made.'),
    cfg.IntOpt(
        'vcpu_low_percent', default=30, min=1, max=99,
        help='vCPUs shrink (by one step, the threads per core) when the '
             'share of them the guest keeps busy stays below this for '
             'shrink_after seconds. Must be below vcpu_high_percent.'),
    cfg.IntOpt(
        'vcpu_high_percent', default=80, min=2, max=100,
        help='vCPUs grow (by one step, the threads per core) when the '
             'share of them the guest keeps busy stays above this for '
             'grow_after seconds. A shrink that would leave them busier '
             'than the middle of the low and high percents is not made.'),
    cfg.IntOpt(
        'vcpu_steal_percent', default=10, min=0, max=100,
        help='vCPUs do not grow while the host keeps more than this share '
             'of them waiting in its run queue (libvirt\'s vcpu.<n>.delay, '
             'the guest\'s steal time): more would only wait as well. 0 '
             'ignores it.'),
    cfg.IntOpt(
        'grow_after', default=180, min=0, max=86400,
        help='Seconds a guest\'s pressure must last before it is grown.'),
    cfg.IntOpt(
        'shrink_after', default=900, min=0, max=86400,
        help='Seconds a guest must stay idle before it is shrunk (only '
             'grow_after on a host short of memory). Must be at least '
             'grow_after.'),
    cfg.IntOpt(
        'cooldown', default=300, min=0, max=86400,
        help='Seconds after any change of one of an instance\'s vCPUs or '
             'memory during which that dimension is not changed again.'),
    cfg.IntOpt(
        'reverse_cooldown', default=1800, min=0, max=86400,
        help='Seconds after a grow during which that dimension is not '
             'shrunk. Must be at least cooldown.'),
    cfg.IntOpt(
        'host_memory_reserve_percent', default=10, min=0, max=90,
        help='The share of the compute host\'s memory the autopilot keeps '
             'free. Below it the host is short of memory: idle guests are '
             'shrunk first (after grow_after rather than shrink_after), '
             'and no grow takes the host below it.'),
]

CONF = cfg.CONF
CONF.register_group(GROUP)
CONF.register_opts(OPTS, group=GROUP)
CONF.register_group(AUTOPILOT_GROUP)
CONF.register_opts(AUTOPILOT_OPTS, group=AUTOPILOT_GROUP)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    return [(GROUP, OPTS), (AUTOPILOT_GROUP, AUTOPILOT_OPTS)]
