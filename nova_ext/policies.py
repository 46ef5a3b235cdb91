"""Policy defaults of the os-xloud-adjust, os-xloud-audit,
os-xloud-flavor-minimums and os-xloud-host-exposure APIs.

The rules are registered on Nova's own enforcer, so an operator overrides
them in Nova's ``policy.yaml`` like any Nova rule, and
``oslopolicy-sample-generator --namespace xloud`` documents them through
the ``oslo.policy.policies`` entry point.

They are named under this project's own ``xloud:`` prefix. The ones
first named under Nova's ``os_compute_api:xloud:*`` carry that name as a
deprecated rule, so a ``policy.yaml`` that still overrides the former
name keeps working (with a deprecation warning) until it names the new
rule.
"""

import threading

from nova import policy as nova_policy
from nova.policies import base
from oslo_policy import policy

POLICY_ROOT = 'xloud:elastic_sizing:%s'
ADJUST = POLICY_ROOT % 'adjust'
SHOW = POLICY_ROOT % 'show'
INDEX = POLICY_ROOT % 'index'
INDEX_ALL_TENANTS = POLICY_ROOT % 'index:all_tenants'
AUDIT = POLICY_ROOT % 'audit'
# A new rule: it has no former os_compute_api:xloud:* name.
FLAVOR_MINIMUMS = POLICY_ROOT % 'flavor_minimums'
HOST_EXPOSURE = POLICY_ROOT % 'host_exposure'
AUTOPILOT = POLICY_ROOT % 'autopilot'

DEPRECATED_POLICY_ROOT = 'os_compute_api:xloud:%s'
DEPRECATED_REASON = """
The elastic sizing rules are named under this project's own xloud: prefix:
os_compute_api: is the prefix of Nova's own API rules.
"""
DEPRECATED_SINCE = '0.2.0'


def _deprecated_rule(action: str, check_str: str) -> policy.DeprecatedRule:
    return policy.DeprecatedRule(
        name=DEPRECATED_POLICY_ROOT % action,
        check_str=check_str,
        deprecated_reason=DEPRECATED_REASON,
        deprecated_since=DEPRECATED_SINCE,
    )


rules = [
    policy.DocumentedRuleDefault(
        name=ADJUST,
        check_str=base.ADMIN,
        description='Change the current number of vCPUs and the current '
                    'memory (balloon target) of a server within its '
                    'flavor\'s minimum and maximum.',
        operations=[
            {'method': 'POST', 'path': '/os-xloud-adjust/{server_id}'},
        ],
        scope_types=['project'],
        deprecated_rule=_deprecated_rule('adjust', base.ADMIN),
    ),
    policy.DocumentedRuleDefault(
        name=SHOW,
        check_str=base.PROJECT_READER_OR_ADMIN,
        description='Show the current, minimum and maximum size of a '
                    'server.',
        operations=[
            {'method': 'GET', 'path': '/os-xloud-adjust/{server_id}'},
        ],
        scope_types=['project'],
        deprecated_rule=_deprecated_rule(
            'show', base.PROJECT_READER_OR_ADMIN),
    ),
    policy.DocumentedRuleDefault(
        name=INDEX,
        check_str=base.PROJECT_READER_OR_ADMIN,
        description='List the current, minimum and maximum sizes of the '
                    'servers of the project.',
        operations=[
            {'method': 'GET', 'path': '/os-xloud-adjust'},
        ],
        scope_types=['project'],
        deprecated_rule=_deprecated_rule(
            'index', base.PROJECT_READER_OR_ADMIN),
    ),
    policy.DocumentedRuleDefault(
        name=INDEX_ALL_TENANTS,
        check_str=base.ADMIN,
        description='List the sizes of the servers of all projects '
                    '(the all_tenants query parameter).',
        operations=[
            {'method': 'GET', 'path': '/os-xloud-adjust?all_tenants=1'},
        ],
        scope_types=['project'],
        deprecated_rule=_deprecated_rule('index:all_tenants', base.ADMIN),
    ),
    policy.DocumentedRuleDefault(
        name=AUDIT,
        check_str=base.ADMIN,
        description='Audit elastic instances: compare each one\'s libvirt '
                    'domain, recorded size and placement allocation across '
                    'every project, and with fix settle them from the '
                    'domain.',
        operations=[
            {'method': 'GET', 'path': '/os-xloud-audit'},
            {'method': 'POST', 'path': '/os-xloud-audit'},
        ],
        scope_types=['project'],
        deprecated_rule=_deprecated_rule('audit', base.ADMIN),
    ),
    policy.DocumentedRuleDefault(
        name=FLAVOR_MINIMUMS,
        check_str=base.ADMIN,
        description='Count the instances of a flavor that carry its current '
                    'xloud:minimum_cpu / xloud:minimum_memory in their '
                    'embedded flavor, and apply them to the others (their '
                    'embedded flavor and RequestSpec), across every '
                    'project and cell.',
        operations=[
            {'method': 'GET',
             'path': '/os-xloud-flavor-minimums/{flavor_id}'},
            {'method': 'POST',
             'path': '/os-xloud-flavor-minimums/{flavor_id}/action '
                     '(apply)'},
        ],
        scope_types=['project'],
    ),
    policy.DocumentedRuleDefault(
        name=HOST_EXPOSURE,
        check_str=base.ADMIN,
        description='Show, per compute host, the placement capacity and '
                    'allocation of vCPUs and memory, and what they would '
                    'be if every elastic server on it grew to its '
                    'flavor\'s maximum.',
        operations=[
            {'method': 'GET', 'path': '/os-xloud-host-exposure'},
        ],
        scope_types=['project'],
    ),
    policy.DocumentedRuleDefault(
        name=AUTOPILOT,
        check_str=base.ADMIN,
        description='Set what the autopilot sizes of a server (overriding '
                    'its flavor\'s xloud:autosize) and the mode it runs '
                    'in for it (at most its compute host\'s).',
        operations=[
            {'method': 'PUT',
             'path': '/os-xloud-adjust/{server_id}/autopilot'},
        ],
        scope_types=['project'],
    ),
]

_register_lock = threading.Lock()


def list_rules() -> list[policy.DocumentedRuleDefault]:
    return rules


def register_rules() -> None:
    """Register the rules on Nova's enforcer unless it already has them.

    Called on every request the API filter serves: Nova builds a new
    enforcer after ``nova.policy.reset()``. ``nova.policy.get_enforcer()``
    is not used because it re-parses the configuration with no arguments
    (it exists for the oslopolicy command line tools), which would drop
    the ``--config-file`` options of a running nova-api.
    """
    nova_policy.init()
    enforcer = nova_policy._ENFORCER
    if all(rule.name in enforcer.registered_rules for rule in rules):
        return
    with _register_lock:
        missing = [rule for rule in rules
                   if rule.name not in enforcer.registered_rules]
        if missing:
            enforcer.register_defaults(missing)
            # Adds the new defaults, keeping policy.yaml overrides of them.
            enforcer.load_rules()
