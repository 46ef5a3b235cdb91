"""The line-level edits on layouts Nova's samples do not have."""

import pytest

from nova_ext.deploy import nova_conf, paste_ini
from nova_ext.deploy.files import Refused

CONTINUED_PIPELINE = """\
[composite:openstack_compute_api_v21]
use = call:nova.api.auth:pipeline_factory_v21
keystone = cors http_proxy_to_wsgi compute_req_id faultwrap
    request_log sizelimit osprofiler authtoken keystonecontext
    osapi_compute_app_v21
# a comment that stays

[filter:keystonecontext]
paste.filter_factory = nova.api.auth:NovaKeystoneContext.factory"""


def test_pipeline_continued_over_several_lines():
    text = paste_ini.add_filter('api-paste.ini', CONTINUED_PIPELINE)
    assert paste_ini.state('api-paste.ini', text) == 'installed'
    assert ('keystone = cors http_proxy_to_wsgi compute_req_id faultwrap '
            'request_log sizelimit osprofiler authtoken keystonecontext '
            'xloud_adjust osapi_compute_app_v21\n# a comment that stays\n'
            in text)
    assert text.endswith('factory\n\n' + paste_ini.FILTER_TEXT)
    reverted = paste_ini.remove_filter(text)
    assert paste_ini.state('api-paste.ini', reverted) == 'absent'
    assert 'keystonecontext osapi_compute_app_v21' in reverted


def test_filter_in_pipeline_at_the_wrong_place_is_refused():
    text = paste_ini.add_filter('api-paste.ini', CONTINUED_PIPELINE)
    moved = text.replace('keystonecontext xloud_adjust',
                         'xloud_adjust keystonecontext')
    with pytest.raises(Refused, match='not once, right after'):
        paste_ini.state('api-paste.ini', moved)


@pytest.mark.parametrize('text, expected', [
    ('[DEFAULT]\ndebug = true', '[DEFAULT]\ncompute_driver = '
     'xloud.XloudLibvirtDriver\ndebug = true\n'),
    ('[libvirt]\nvirt_type = kvm\n', '[DEFAULT]\ncompute_driver = '
     'xloud.XloudLibvirtDriver\n\n[libvirt]\nvirt_type = kvm\n'),
    ('[DEFAULT]\ncompute_driver=libvirt.LibvirtDriver\n[libvirt]\n',
     '[DEFAULT]\ncompute_driver = xloud.XloudLibvirtDriver\n[libvirt]\n'),
])
def test_compute_driver_set_in_any_layout(text, expected):
    assert nova_conf.set_driver('nova.conf', text,
                                nova_conf.XLOUD_DRIVER) == expected


def test_compute_driver_in_another_section_is_not_nova_s():
    text = '[libvirt]\ncompute_driver = x\n'
    assert nova_conf.current_driver('nova.conf', text) is None


def test_compute_driver_set_twice_is_refused():
    text = ('[DEFAULT]\ncompute_driver = libvirt.LibvirtDriver\n'
            '[DEFAULT]\ncompute_driver = fake.FakeDriver\n')
    with pytest.raises(Refused, match='set 2 times'):
        nova_conf.current_driver('nova.conf', text)


def test_reverse_without_a_record_falls_back_to_libvirt():
    text = '[DEFAULT]\ncompute_driver = xloud.XloudLibvirtDriver\n'
    assert nova_conf.restore_driver(text, {}) == \
        '[DEFAULT]\ncompute_driver = libvirt.LibvirtDriver\n'
    assert nova_conf.restore_driver(
        text, {'previous_compute_driver': None}) == '[DEFAULT]\n'
