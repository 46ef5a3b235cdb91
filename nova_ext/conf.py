"""Configuration options of the elastic sizing extension (``[xloud]``).

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

CONF = cfg.CONF
CONF.register_group(GROUP)
CONF.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    return [(GROUP, OPTS)]
