"""The ``compute_driver`` edit of ``nova.conf`` on compute hosts.

Nova imports ``nova.virt.<compute_driver>``; the package installs
``nova/virt/xloud/`` so the elastic driver is ``xloud.XloudLibvirtDriver``.
The previous value is recorded so uninstall can put it back even when the
file changed since install.
"""

import re

from nova_ext.deploy import ini
from nova_ext.deploy.files import Refused

SECTION = 'DEFAULT'
KEY = 'compute_driver'
XLOUD_DRIVER = 'xloud.XloudLibvirtDriver'
# Drivers the elastic driver can stand in for: it subclasses LibvirtDriver.
REPLACEABLE = ('libvirt.LibvirtDriver', XLOUD_DRIVER)
_COMMENTED_DEFAULT = re.compile(rf'^\s*#\s*{KEY}\s*=')


def current_driver(path: str, text: str) -> str | None:
    """The ``compute_driver`` this file sets, None when it sets none."""
    _sections, options = ini.parse(text.splitlines(keepends=True))
    found = ini.find_options(options, SECTION, KEY)
    if len(found) > 1:
        raise Refused(f'{path}: {KEY} is set {len(found)} times in '
                      f'[{SECTION}]; keep one and retry')
    return found[0].value if found else None


def set_driver(path: str, text: str, driver: str) -> str:
    """``text`` with ``[DEFAULT] compute_driver = driver``."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith('\n'):
        lines[-1] += '\n'
    sections, options = ini.parse(lines)
    found = ini.find_options(options, SECTION, KEY)
    line = f'{KEY} = {driver}\n'
    if found:
        option = found[0]
        return ''.join(lines[:option.start] + [line] + lines[option.end:])
    defaults = ini.find_sections(sections, SECTION)
    if not defaults:
        return ''.join([f'[{SECTION}]\n', line, '\n'] + lines)
    section = defaults[0]
    # In a generated sample the setting goes under its documentation.
    at = section.start + 1
    for index in range(section.start + 1, section.end):
        if _COMMENTED_DEFAULT.match(lines[index]):
            at = index + 1
            break
    return ''.join(lines[:at] + [line] + lines[at:])


def remove_driver(text: str) -> str:
    lines = text.splitlines(keepends=True)
    _sections, options = ini.parse(lines)
    drop = {i for o in ini.find_options(options, SECTION, KEY)
            for i in range(o.start, o.end)}
    return ''.join(line for i, line in enumerate(lines) if i not in drop)


def is_installed(text: str) -> bool:
    _sections, options = ini.parse(text.splitlines(keepends=True))
    return any(o.value == XLOUD_DRIVER
               for o in ini.find_options(options, SECTION, KEY))


def restore_driver(text: str, details: dict) -> str:
    """The reverse of the install for a file changed since: the recorded
    previous driver, or no setting when there was none."""
    # Without a record (a config baked elsewhere) fall back to the driver
    # the elastic one extends.
    previous = details.get('previous_compute_driver', REPLACEABLE[0])
    if previous is None:
        return remove_driver(text)
    return set_driver('nova.conf', text, previous)
