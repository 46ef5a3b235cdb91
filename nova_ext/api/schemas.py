"""JSON schemas of the os-xloud-adjust API, in Nova's schema style.

Sizes follow Nova's ``parameter_types.positive_integer``: a JSON integer or
a string of decimal digits. The pattern is stricter than Nova's in one
respect: Python's ``$`` also matches before a trailing newline, so ``"2\\n"``
would pass ``^[0-9]*$``; the lookahead refuses it. JSON Schema counts
``2.0`` as an integer; the controller refuses floats (``size_value``).
"At least one of the two sizes" is checked by the controller as well, with
a clearer message than ``anyOf`` gives.
"""

import copy

from nova.api.validation import parameter_types
from nova.db import constants as db_const

from nova_ext import audit, compatibility, readiness, sizing

size = {
    'type': ['integer', 'string'],
    'pattern': '^[0-9]+$(?!\n)',
    'minimum': 1,
    # Nova's own bound for flavor vcpus and ram.
    'maximum': db_const.MAX_INT,
}

adjust = {
    'type': 'object',
    'properties': {
        'current_vcpus': size,
        'current_memory_mb': size,
        'persist': {'type': 'boolean'},
    },
    'additionalProperties': False,
}

index_query = {
    'type': 'object',
    'properties': {
        'all_tenants': parameter_types.multi_params({'type': 'string'}),
        'project_id': parameter_types.common_query_param,
        'host': parameter_types.common_query_param,
        'name': parameter_types.common_query_regex_param,
        'flavor': parameter_types.common_query_param,
        'limit': parameter_types.multi_params(
            parameter_types.non_negative_integer),
        'marker': parameter_types.multi_params({'type': 'string'}),
        # Asks each compute host of the page once for its guests'
        # readiness (nova_ext.readiness).
        'readiness': parameter_types.multi_params(
            {'type': 'string', 'enum': ['true', 'false', 'True', 'False',
                                        '1', '0']}),
    },
    'additionalProperties': False,
}

_nullable_int = {'type': ['integer', 'null']}
_nullable_str = {'type': ['string', 'null']}
_nullable_time = {
    'oneOf': [
        {'type': 'string', 'format': 'date-time'},
        {'type': 'null'},
    ],
}

size_view = {
    'type': 'object',
    'properties': {
        'id': {'type': 'string', 'format': 'uuid'},
        'name': _nullable_str,
        'project_id': {'type': 'string'},
        'host': _nullable_str,
        'status': {'type': 'string'},
        'flavor': {
            'type': 'object',
            'properties': {
                'id': {'type': 'string'},
                'name': {'type': 'string'},
                'vcpus': {'type': 'integer'},
                'memory_mb': {'type': 'integer'},
                'minimum_cpu': _nullable_int,
                'minimum_memory': _nullable_int,
                'memory_model': {'type': 'string',
                                 'enum': list(sizing.MEMORY_MODELS)},
            },
            'required': ['id', 'name', 'vcpus', 'memory_mb', 'minimum_cpu',
                         'minimum_memory', 'memory_model'],
            'additionalProperties': False,
        },
        'current_vcpus': {'type': 'integer'},
        'current_memory_mb': {'type': 'integer'},
        'max_vcpus': {'type': 'integer'},
        'max_memory_mb': {'type': 'integer'},
        'min_vcpus': {'type': 'integer'},
        'min_memory_mb': {'type': 'integer'},
        'boot_vcpus': {'type': 'integer'},
        'boot_memory_mb': {'type': 'integer'},
        'source': {'type': 'string', 'enum': ['live', 'recorded']},
        'updated_at': _nullable_time,
        'not_adjustable': {
            'type': 'object',
            'properties': {
                'vcpus': _nullable_str,
                'memory_mb': _nullable_str,
            },
            'required': ['vcpus', 'memory_mb'],
            'additionalProperties': False,
        },
        'adjustment': {
            'type': 'object',
            'properties': {
                'status': {
                    'type': ['string', 'null'],
                    'enum': [sizing.STATUS_ADJUSTING, sizing.STATUS_SUCCESS,
                             sizing.STATUS_PARTIAL, sizing.STATUS_ERROR,
                             None],
                },
                'request_id': _nullable_str,
                'error': _nullable_str,
            },
            'required': ['status', 'request_id', 'error'],
            'additionalProperties': False,
        },
    },
    'required': [
        'id', 'name', 'project_id', 'host', 'status', 'flavor',
        'current_vcpus', 'current_memory_mb', 'max_vcpus', 'max_memory_mb',
        'min_vcpus', 'min_memory_mb', 'boot_vcpus', 'boot_memory_mb',
        'source', 'updated_at', 'not_adjustable', 'adjustment',
    ],
    'additionalProperties': False,
}

show_view = copy.deepcopy(size_view)
show_view['properties']['changes'] = {
    'type': 'array',
    'items': {
        'type': 'object',
        'properties': {
            'request_id': {'type': 'string'},
            'changed_at': {'type': 'string', 'format': 'date-time'},
            'details': {'type': 'string', 'maxLength': 255},
        },
        'required': ['request_id', 'changed_at', 'details'],
        'additionalProperties': False,
    },
    'maxItems': sizing.CHANGE_HISTORY_LIMIT,
}
show_view['required'].append('changes')
guest_view = {
    'type': 'object',
    'properties': {
        'agent': {'type': ['string', 'null'],
                  'enum': [*sizing.GUEST_AGENT_STATES, None]},
        'online_vcpus': _nullable_int,
        'available_memory_mb': _nullable_int,
        'usable_memory_mb': _nullable_int,
        'as_of': _nullable_time,
    },
    'required': ['agent', 'online_vcpus', 'available_memory_mb',
                 'usable_memory_mb', 'as_of'],
    'additionalProperties': False,
}
show_view['properties']['guest'] = guest_view
show_view['required'].append('guest')

_per_dimension = {
    'type': 'object',
    'properties': {
        'vcpus': _nullable_str,
        'memory_mb': _nullable_str,
    },
    'required': ['vcpus', 'memory_mb'],
    'additionalProperties': False,
}

readiness_view = {
    'type': 'object',
    'properties': {
        'as_of': _nullable_time,
        'error': _nullable_str,
        'balloon': {'type': 'string', 'enum': list(readiness.BALLOON_STATES)},
        'guest_agent': {'type': 'string',
                        'enum': list(readiness.AGENT_STATES)},
        'vcpu_hotplug': {'type': 'string',
                         'enum': list(readiness.HOTPLUG_STATES)},
        'machine_type': _nullable_str,
        # Null for a balloon guest.
        'virtio_mem': {
            'oneOf': [
                {
                    'type': 'object',
                    'properties': {
                        'state': {'type': 'string',
                                  'enum': list(readiness.VIRTIO_MEM_STATES)},
                        'requested_mb': _nullable_int,
                        'plugged_mb': _nullable_int,
                    },
                    'required': ['state', 'requested_mb', 'plugged_mb'],
                    'additionalProperties': False,
                },
                {'type': 'null'},
            ],
        },
        'migrated_since_boot': {'type': 'boolean'},
        'last_outcome': copy.deepcopy(
            size_view['properties']['adjustment']['properties']['status']),
        'adjustable': {
            'type': 'object',
            'properties': {
                'vcpus': {'type': 'boolean'},
                'memory_mb': {'type': 'boolean'},
            },
            'required': ['vcpus', 'memory_mb'],
            'additionalProperties': False,
        },
        'reasons': _per_dimension,
        'warnings': {'type': 'array', 'items': {'type': 'string'}},
    },
    'required': ['as_of', 'error', 'balloon', 'guest_agent', 'vcpu_hotplug',
                 'machine_type', 'virtio_mem', 'migrated_since_boot',
                 'last_outcome', 'adjustable', 'reasons', 'warnings'],
    'additionalProperties': False,
}

utilisation_view = {
    'type': 'object',
    'properties': {
        'memory': {
            'oneOf': [
                {
                    'type': 'object',
                    'properties': {
                        'used_mb': {'type': 'integer', 'minimum': 0},
                        'current_mb': {'type': 'integer', 'minimum': 1},
                    },
                    'required': ['used_mb', 'current_mb'],
                    'additionalProperties': False,
                },
                {'type': 'null'},
            ],
        },
        'vcpus': {
            'oneOf': [
                {
                    'type': 'object',
                    'properties': {
                        'busy': {'type': 'number', 'minimum': 0},
                        'current': {'type': 'integer', 'minimum': 1},
                        'window_seconds': {'type': 'integer',
                                           'minimum': 1},
                    },
                    'required': ['busy', 'current', 'window_seconds'],
                    'additionalProperties': False,
                },
                {'type': 'null'},
            ],
        },
        'reason': _nullable_str,
    },
    'required': ['memory', 'vcpus', 'reason'],
    'additionalProperties': False,
}

recommendation_view = {
    'type': 'object',
    'properties': {
        'vcpus': _nullable_int,
        'memory_mb': _nullable_int,
        'vcpus_rule': _nullable_str,
        'memory_rule': _nullable_str,
    },
    'required': ['vcpus', 'memory_mb', 'vcpus_rule', 'memory_rule'],
    'additionalProperties': False,
}

_dimension_names = {'type': 'string',
                    'enum': [compatibility.VCPUS, compatibility.MEMORY]}
_nullable_autopilot_mode = {'enum': [*sizing.AUTOPILOT_MODES, None]}

autopilot_decision = readiness.AUTOPILOT_DECISION_SCHEMA

# The instance's own setting (what os-xloud-adjust/{id}/autopilot sets).
autopilot_setting = {
    'type': 'object',
    'properties': {
        'dimensions': {'type': 'array', 'items': _dimension_names,
                       'uniqueItems': True},
        'dimensions_from': {'enum': ['flavor', 'instance', None]},
        'instance_mode': _nullable_autopilot_mode,
    },
    'required': ['dimensions', 'dimensions_from', 'instance_mode'],
    'additionalProperties': False,
}

autopilot_view = copy.deepcopy(autopilot_setting)
autopilot_view['properties'].update({
    # null: the compute host was not read, or runs without the autopilot.
    'host_mode': _nullable_autopilot_mode,
    'mode': _nullable_autopilot_mode,
    'decisions': {'type': 'array', 'items': autopilot_decision},
    'as_of': _nullable_time,
    # In recommend mode, the size the autopilot would move to.
    'recommended': {
        'oneOf': [{'type': 'null'}, {
            'type': 'object',
            'properties': {'vcpus': _nullable_int,
                           'memory_mb': _nullable_int},
            'required': ['vcpus', 'memory_mb'],
            'additionalProperties': False,
        }],
    },
})
autopilot_view['required'] = [*autopilot_setting['required'], 'host_mode',
                              'mode', 'decisions', 'as_of', 'recommended']

autopilot_update = {
    'type': 'object',
    'properties': {
        'autopilot': {
            'type': 'object',
            'properties': {
                # null: the flavor's xloud:autosize; []: none.
                'dimensions': {
                    'type': ['array', 'null'], 'items': _dimension_names,
                    'uniqueItems': True},
                # null: the compute host's [xloud_autopilot] mode.
                'mode': _nullable_autopilot_mode,
            },
            'required': ['dimensions', 'mode'],
            'additionalProperties': False,
        },
    },
    'required': ['autopilot'],
    'additionalProperties': False,
}

autopilot_update_response = {
    'type': 'object',
    'properties': {'autopilot': autopilot_setting},
    'required': ['autopilot'],
    'additionalProperties': False,
}

_readiness_keys = {
    'readiness': readiness_view,
    'utilisation': utilisation_view,
    'recommendation': recommendation_view,
    'autopilot': autopilot_view,
}
show_view['properties'].update(copy.deepcopy(_readiness_keys))
show_view['required'].extend(_readiness_keys)

# The list has them (and the guest's view) only with readiness=true.
_index_item = copy.deepcopy(size_view)
_index_item['properties'].update(copy.deepcopy(_readiness_keys))
_index_item['properties']['guest'] = copy.deepcopy(guest_view)
_index_item['dependentRequired'] = {
    'readiness': ['utilisation', 'recommendation', 'guest', 'autopilot'],
}

show_response = {
    'type': 'object',
    'properties': {'server': show_view},
    'required': ['server'],
    'additionalProperties': False,
}

index_response = {
    'type': 'object',
    'properties': {
        'servers': {'type': 'array', 'items': _index_item},
        'servers_links': {
            'type': 'array',
            'items': {
                'type': 'object',
                'properties': {
                    'href': {'type': 'string', 'format': 'uri'},
                    'rel': {'type': 'string'},
                },
                'required': ['href', 'rel'],
                'additionalProperties': False,
            },
        },
    },
    'required': ['servers', 'servers_links'],
    'additionalProperties': False,
}

adjust_response = {
    'type': 'object',
    'properties': {
        'adjustment': {
            'type': 'object',
            'properties': {
                'server_id': {'type': 'string', 'format': 'uuid'},
                'request_id': {'type': 'string'},
                'current_vcpus': _nullable_int,
                'current_memory_mb': _nullable_int,
                'persist': {'type': 'boolean'},
                'action': {'type': 'string', 'enum': [sizing.ACTION]},
            },
            'required': ['server_id', 'request_id', 'current_vcpus',
                         'current_memory_mb', 'persist', 'action'],
            'additionalProperties': False,
        },
    },
    'required': ['adjustment'],
    'additionalProperties': False,
}


# The os-xloud-audit API (nova_ext.api.audit, doc/audit.md).

_audit_host = {'type': 'string', 'minLength': 1, 'maxLength': 255}
# A page of the panel, or a few servers; Nova's [api] max_limit default.
AUDIT_MAX_SERVERS = 1000

audit_query = {
    'type': 'object',
    'properties': {
        'host': parameter_types.single_param(_audit_host),
        'server_id': {
            'type': 'array',
            'items': {'type': 'string', 'format': 'uuid'},
            'maxItems': AUDIT_MAX_SERVERS,
        },
    },
    'additionalProperties': False,
}

audit_fix = {
    'type': 'object',
    'properties': {
        'host': _audit_host,
        'server_ids': {
            'type': 'array',
            'items': {'type': 'string', 'format': 'uuid'},
            'minItems': 1,
            'maxItems': AUDIT_MAX_SERVERS,
            'uniqueItems': True,
        },
        'fix': {'type': 'boolean'},
    },
    'required': ['fix'],
    'additionalProperties': False,
}

_audit_size = {
    'type': 'object',
    'properties': {
        'vcpus': {'type': 'integer'},
        'memory_mb': {'type': 'integer'},
    },
    'required': ['vcpus', 'memory_mb'],
    'additionalProperties': False,
}
_nullable_audit_size = {'oneOf': [_audit_size, {'type': 'null'}]}

audit_finding = {
    'type': 'object',
    'properties': {
        'server_id': {'type': 'string', 'format': 'uuid'},
        'host': _nullable_str,
        'kind': {'type': 'string', 'enum': list(audit.KINDS)},
        'severity': {'type': 'string', 'enum': ['critical', 'warning']},
        'message': {'type': 'string'},
        # The values compared; which ones depends on the kind.
        'observed': {
            'type': 'object',
            'properties': {
                'domain_live': _audit_size,
                'domain_config': _audit_size,
                'record_live': _audit_size,
                'record_boot': _audit_size,
                'placement': _nullable_audit_size,
                'domain_state': {'type': 'string'},
                'task_state': _nullable_str,
                'xloud_status': _nullable_str,
                'request_id': _nullable_str,
                'error': {'type': 'string'},
                'virtio_mem': {
                    'type': 'object',
                    'properties': {'requested_mb': {'type': 'integer'},
                                   'plugged_mb': {'type': 'integer'},
                                   'size_mb': {'type': 'integer'}},
                    'required': ['requested_mb', 'plugged_mb'],
                    'additionalProperties': False,
                },
            },
            'additionalProperties': False,
        },
    },
    'required': ['server_id', 'host', 'kind', 'severity', 'message',
                 'observed'],
    'additionalProperties': False,
}

audit_report = {
    'type': 'object',
    'properties': {
        'status': {'type': 'string', 'enum': ['in_sync', 'drift', 'error']},
        'host': _nullable_str,
        'fix': {'type': 'boolean'},
        'checked': {'type': 'integer', 'minimum': 0},
        'hosts': {
            'type': 'array',
            'items': {
                'type': 'object',
                'properties': {
                    'host': {'type': 'string'},
                    'instances': {'type': 'integer', 'minimum': 0},
                    'checked': {'type': 'integer', 'minimum': 0},
                    'error': _nullable_str,
                },
                'required': ['host', 'instances', 'checked', 'error'],
                'additionalProperties': False,
            },
        },
        'servers': {
            'type': 'array',
            'items': {
                'type': 'object',
                'properties': {
                    'server_id': {'type': 'string', 'format': 'uuid'},
                    'host': _nullable_str,
                    'status': {'type': 'string',
                               'enum': ['in_sync', 'drift', 'unknown']},
                },
                'required': ['server_id', 'host', 'status'],
                'additionalProperties': False,
            },
        },
        'findings': {'type': 'array', 'items': audit_finding},
        'remaining': {'type': 'array', 'items': audit_finding},
        'healed': {
            'type': 'array',
            'items': {
                'type': 'object',
                'properties': {
                    'server_id': {'type': 'string', 'format': 'uuid'},
                    'host': {'type': 'string'},
                    'changes': {'type': 'array', 'items': {'type': 'string'}},
                    'errors': {'type': 'array', 'items': {'type': 'string'}},
                },
                'required': ['server_id', 'host', 'changes', 'errors'],
                'additionalProperties': False,
            },
        },
        'skipped': {
            'type': 'array',
            'items': {
                'type': 'object',
                'properties': {
                    'server_id': {'type': 'string', 'format': 'uuid'},
                    'host': _nullable_str,
                    'reason': {'type': 'string'},
                },
                'required': ['server_id', 'host', 'reason'],
                'additionalProperties': False,
            },
        },
        'errors': {'type': 'array', 'items': {'type': 'string'}},
    },
    'required': ['status', 'host', 'fix', 'checked', 'hosts', 'servers',
                 'findings', 'remaining', 'healed', 'skipped', 'errors'],
    'additionalProperties': False,
}

audit_response = {
    'type': 'object',
    'properties': {'audit': audit_report},
    'required': ['audit'],
    'additionalProperties': False,
}


# The os-xloud-flavor-minimums API (nova_ext.api.flavor_minimums,
# nova_ext.flavor_minimums).

flavor_minimums_query = {
    'type': 'object',
    'properties': {},
    'additionalProperties': False,
}

flavor_minimums_apply = {
    'type': 'object',
    'properties': {
        'apply': {
            'type': 'object',
            'properties': {},
            'additionalProperties': False,
        },
    },
    'required': ['apply'],
    'additionalProperties': False,
}

_count = {'type': 'integer', 'minimum': 0}
_counts = {
    'instances': _count,
    'current': _count,
    'stale': _count,
    'busy': _count,
    'below_minimum': _count,
}

flavor_minimums_report = {
    'type': 'object',
    'properties': {
        'flavor': copy.deepcopy(size_view['properties']['flavor']),
        'memory_floor_mb': {'type': 'integer', 'minimum': 1},
        **_counts,
        'cells': {
            'type': 'array',
            'items': {
                'type': 'object',
                'properties': {
                    'uuid': {'type': 'string', 'format': 'uuid'},
                    'name': _nullable_str,
                    **_counts,
                    'error': _nullable_str,
                },
                'required': ['uuid', 'name', *_counts, 'error'],
                'additionalProperties': False,
            },
        },
        'errors': {'type': 'array', 'items': {'type': 'string'}},
    },
    'required': ['flavor', 'memory_floor_mb', *_counts, 'cells', 'errors'],
    'additionalProperties': False,
}

flavor_minimums_response = {
    'type': 'object',
    'properties': {'flavor_minimums': flavor_minimums_report},
    'required': ['flavor_minimums'],
    'additionalProperties': False,
}

flavor_minimums_applied = copy.deepcopy(flavor_minimums_report)
flavor_minimums_applied['properties'].update({
    'updated': _count,
    'servers': {
        'type': 'array',
        'items': {
            'type': 'object',
            'properties': {
                'server_id': {'type': 'string', 'format': 'uuid'},
                'cell': {'type': 'string'},
                'result': {'type': 'string',
                           'enum': ['updated', 'busy', 'error']},
                'below_minimum': {'type': 'boolean'},
                'recorded': {'type': 'boolean'},
                'current_vcpus': _nullable_int,
                'current_memory_mb': _nullable_int,
                'boot_vcpus': _nullable_int,
                'boot_memory_mb': _nullable_int,
                'message': _nullable_str,
            },
            'required': ['server_id', 'cell', 'result', 'below_minimum',
                         'recorded', 'current_vcpus', 'current_memory_mb',
                         'boot_vcpus', 'boot_memory_mb', 'message'],
            'additionalProperties': False,
        },
    },
})
flavor_minimums_applied['required'].extend(['updated', 'servers'])

flavor_minimums_apply_response = {
    'type': 'object',
    'properties': {'flavor_minimums': flavor_minimums_applied},
    'required': ['flavor_minimums'],
    'additionalProperties': False,
}


# The os-xloud-host-exposure API (nova_ext.api.host_exposure,
# nova_ext.exposure), also each audit report's host_exposure.

host_exposure_query = {
    'type': 'object',
    'properties': {
        'host': parameter_types.single_param(_audit_host),
    },
    'additionalProperties': False,
}

_exposure_dimension = {
    'type': 'object',
    'properties': {
        'total': {'type': 'integer'},
        'reserved': {'type': 'integer'},
        'allocation_ratio': {'type': 'number', 'exclusiveMinimum': 0},
        'capacity': {'type': 'integer', 'minimum': 0},
        'allocated': {'type': 'integer', 'minimum': 0},
        'headroom': {'type': 'integer', 'minimum': 0},
        'potential': {'type': 'integer', 'minimum': 0},
        'over_capacity': {'type': 'boolean'},
    },
    'required': ['total', 'reserved', 'allocation_ratio', 'capacity',
                 'allocated', 'headroom', 'potential', 'over_capacity'],
    'additionalProperties': False,
}
_nullable_exposure_dimension = {
    'oneOf': [_exposure_dimension, {'type': 'null'}]}

host_exposure_node = {
    'type': 'object',
    'properties': {
        'host': {'type': 'string'},
        'node': {'type': 'string'},
        'resource_provider': {'type': 'string', 'format': 'uuid'},
        'elastic_instances': {'type': 'integer', 'minimum': 0},
        'vcpus': _nullable_exposure_dimension,
        'memory_mb': _nullable_exposure_dimension,
        'over_capacity': {'type': 'boolean'},
        'error': _nullable_str,
    },
    'required': ['host', 'node', 'resource_provider', 'elastic_instances',
                 'vcpus', 'memory_mb', 'over_capacity', 'error'],
    'additionalProperties': False,
}

host_exposure_report = {
    'type': 'object',
    'properties': {
        'host': _nullable_str,
        'hosts': {'type': 'array', 'items': host_exposure_node},
        'errors': {'type': 'array', 'items': {'type': 'string'}},
    },
    'required': ['host', 'hosts', 'errors'],
    'additionalProperties': False,
}

host_exposure_response = {
    'type': 'object',
    'properties': {'host_exposure': host_exposure_report},
    'required': ['host_exposure'],
    'additionalProperties': False,
}

# The audit reports the exposure of the hosts it audited (none when it
# was limited to servers).
audit_report['properties']['host_exposure'] = {
    'type': 'array', 'items': host_exposure_node}
audit_report['required'].append('host_exposure')
