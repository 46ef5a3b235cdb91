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
