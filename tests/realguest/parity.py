"""The same calls on libvirt's QEMU driver and on tests/nova's fake libvirt.

A scenario runs against a real domain and against an ``ElasticDomain``
defined from the same XML; each step's outcome is compared: the result,
or libvirt's error (code and domain by name, message), then the counts and
the ``<vcpus>`` list libvirt reports.
"""

import contextlib

import libvirt
from lxml import etree
from nova.tests.fixtures import libvirt as nova_fake

from tests.nova import fakelibvirt

LIVE, CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG
INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE
HOTPLUGGABLE = libvirt.VIR_DOMAIN_VCPU_HOTPLUGGABLE


@contextlib.contextmanager
def fake_libvirt():
    """A connection of Nova's fake libvirt with ElasticDomain installed.

    Only around calls on fake domains: the fixture also points
    ``nova_ext.virt.live`` at the fake module.
    """
    fixture = fakelibvirt.ElasticLibvirtFixture()
    fixture.setUp()
    try:
        yield nova_fake.Connection('qemu:///system')
    finally:
        fixture.cleanUp()


def error_names(module, error) -> tuple[frozenset, frozenset]:
    """An error's code and domain by name, in its own module.

    Nova's fake module numbers some differently from libvirt
    (``VIR_ERR_CONFIG_UNSUPPORTED`` is 951 there, 67 in libvirt); code
    compares them by name, ``libvirt.VIR_ERR_…``.
    """
    def named(prefix: str, value: int) -> frozenset:
        return frozenset(name for name in dir(module)
                         if name.startswith(prefix)
                         and getattr(module, name) == value)

    return (named('VIR_ERR_', error.get_error_code()),
            named('VIR_FROM_', error.get_error_domain()))


def vcpus_list(domain, flags: int = 0) -> list[dict[str, str]] | None:
    """The ``<vcpus>`` entries libvirt reports, None without the list."""
    listed = etree.fromstring(domain.XMLDesc(flags)).find('vcpus')
    if listed is None:
        return None
    return [dict(vcpu.attrib) for vcpu in listed]


def observe(domain) -> dict:
    """Counts and ``<vcpus>``: live ones while the domain runs."""
    seen = {'config': domain.vcpusFlags(CONFIG),
            'config_vcpus': vcpus_list(domain, INACTIVE)}
    if domain.isActive():
        seen.update(live=domain.vcpusFlags(LIVE),
                    live_vcpus=vcpus_list(domain))
    return seen


def outcome(domain, method: str, *args) -> tuple:
    module = nova_fake if isinstance(domain, fakelibvirt.ElasticDomain) \
        else libvirt
    try:
        getattr(domain, method)(*args)
    except (libvirt.libvirtError, nova_fake.libvirtError) as e:
        return ('error', *error_names(module, e), str(e), observe(domain))
    return 'ok', observe(domain)


def define(conn, xml: str, start: bool):
    try:
        domain = conn.defineXML(xml)
    except (libvirt.libvirtError, nova_fake.libvirtError) as e:
        module = libvirt if isinstance(e, libvirt.libvirtError) \
            else nova_fake
        return None, ('error', *error_names(module, e), str(e))
    if start:
        domain.create()
    return domain, ('ok', observe(domain))


def remove(domain) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        if domain.isActive():
            domain.destroy()
        domain.undefine()
