"""Validators for the elastic sizing flavor extra specs.

Loaded by Nova's API through the ``nova.api.extra_spec_validators`` entry
point. A validator sees one key at a time; the comparison with the flavor's
own vcpus/ram and with the specs that make a flavor non-elastic
(``nova_ext.compatibility``) is made by the API filter
(``nova_ext.api.filter``).
"""

from nova.api.validation.extra_specs import base

from nova_ext import sizing

_CPU = ('The number of vCPUs an instance boots with and the lowest it can '
        'be adjusted to live. The flavor\'s vcpus is the maximum. Must not '
        'exceed the flavor\'s vcpus.')
_MEMORY = ('The memory in MiB an instance boots with (balloon target) and '
           'the lowest it can be adjusted to live. The flavor\'s ram is the '
           'maximum. Must not exceed the flavor\'s ram.')
_MEMORY_MODEL = ('How memory is adjusted live: "balloon" (the default; the '
                 'guest boots with the flavor\'s ram and a balloon holds back '
                 'what it is not given) or "virtio-mem" (the guest boots with '
                 'xloud:minimum_memory as its RAM; memory is plugged and '
                 'unplugged in 2 MiB blocks up to the flavor\'s ram).')
_AUTOSIZE = ('What the autopilot sizes for instances of this flavor, within '
             'their minimum and maximum: "memory", "cpu" or "memory,cpu". '
             'Without it the autopilot leaves them alone (an instance\'s '
             'own setting aside). What it does is the compute host\'s '
             '[xloud_autopilot] mode: off, recommend or on.')
_DEPRECATED = (' Deprecated unscoped spelling of %s: Nova\'s '
               'AggregateInstanceExtraSpecsFilter takes unscoped keys for '
               'aggregate requirements.')

EXTRA_SPEC_VALIDATORS = [
    base.ExtraSpecValidator(
        name=sizing.MINIMUM_CPU, description=_CPU,
        value={'type': int, 'min': 1}),
    base.ExtraSpecValidator(
        name=sizing.MINIMUM_MEMORY, description=_MEMORY,
        value={'type': int, 'min': 1}),
    base.ExtraSpecValidator(
        name=sizing.MEMORY_MODEL, description=_MEMORY_MODEL,
        value={'type': str, 'enum': list(sizing.MEMORY_MODELS)}),
    base.ExtraSpecValidator(
        name=sizing.AUTOSIZE, description=_AUTOSIZE,
        value={'type': str, 'enum': list(sizing.AUTOSIZE_VALUES)}),
    base.ExtraSpecValidator(
        name=sizing.LEGACY_KEYS[sizing.MINIMUM_CPU],
        description=_CPU + _DEPRECATED % sizing.MINIMUM_CPU,
        value={'type': int, 'min': 1}, deprecated=True),
    base.ExtraSpecValidator(
        name=sizing.LEGACY_KEYS[sizing.MINIMUM_MEMORY],
        description=_MEMORY + _DEPRECATED % sizing.MINIMUM_MEMORY,
        value={'type': int, 'min': 1}, deprecated=True),
]


def register() -> list[base.ExtraSpecValidator]:
    return EXTRA_SPEC_VALIDATORS
