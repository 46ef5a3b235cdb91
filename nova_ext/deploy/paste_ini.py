"""The paste filter edit of Nova's ``api-paste.ini``.

Nova builds the v2.1 API from ``[composite:openstack_compute_api_v21]``
through ``nova.api.auth:pipeline_factory_v21``, which reads only its
``keystone`` key. The filter goes right after ``keystonecontext`` so it
sees the request context Nova built from the token.
"""

from nova_ext.deploy import ini
from nova_ext.deploy.files import Refused

COMPOSITE = 'composite:openstack_compute_api_v21'
PIPELINE_KEY = 'keystone'
PIPELINE_FACTORY = 'call:nova.api.auth:pipeline_factory_v21'
AFTER = 'keystonecontext'
APP = 'osapi_compute_app_v21'
FILTER_NAME = 'xloud_adjust'
FILTER_SECTION = f'filter:{FILTER_NAME}'
FILTER_FACTORY = 'nova_ext.api.filter:filter_factory'
FILTER_TEXT = (f'[{FILTER_SECTION}]\n'
               f'paste.filter_factory = {FILTER_FACTORY}\n')


def _pipeline(path: str, lines: list[str]):
    sections, options = ini.parse(lines)
    if len(ini.find_sections(sections, COMPOSITE)) != 1:
        raise Refused(f'{path}: no single [{COMPOSITE}] section; this is '
                      f'not an api-paste.ini of Nova 34 that the tool '
                      f'recognises')
    use = ini.find_options(options, COMPOSITE, 'use')
    if [o.value for o in use] != [PIPELINE_FACTORY]:
        raise Refused(f'{path}: [{COMPOSITE}] does not use '
                      f'{PIPELINE_FACTORY}; refusing to edit a pipeline '
                      f'the tool does not recognise')
    keys = ini.find_options(options, COMPOSITE, PIPELINE_KEY)
    if len(keys) != 1:
        raise Refused(f'{path}: [{COMPOSITE}] has no single '
                      f'"{PIPELINE_KEY}" pipeline')
    option = keys[0]
    names = option.value.split()
    if not names or names[-1] != APP or names.count(AFTER) != 1:
        raise Refused(
            f'{path}: unrecognised pipeline "{PIPELINE_KEY} = '
            f'{option.value}": expected one "{AFTER}" and "{APP}" last. '
            f'Add "{FILTER_NAME}" right after "{AFTER}" by hand and '
            f'define [{FILTER_SECTION}] with paste.filter_factory = '
            f'{FILTER_FACTORY}')
    return sections, options, option, names


def _filter_section(sections, options):
    found = ini.find_sections(sections, FILTER_SECTION)
    if not found:
        return None
    return {o.key: o.value for o in options if o.section == FILTER_SECTION}


def state(path: str, text: str) -> str:
    """``'absent'`` or ``'installed'``; refuses anything in between."""
    lines = text.splitlines(keepends=True)
    sections, options, _option, names = _pipeline(path, lines)
    section = _filter_section(sections, options)
    in_pipeline = FILTER_NAME in names
    if section is None and not in_pipeline:
        return 'absent'
    if section != {'paste.filter_factory': FILTER_FACTORY}:
        raise Refused(
            f'{path}: [{FILTER_SECTION}] already exists with different '
            f'content ({section}); expected only paste.filter_factory = '
            f'{FILTER_FACTORY}. Fix or remove it, then retry')
    if not in_pipeline:
        raise Refused(f'{path}: [{FILTER_SECTION}] is defined but not in '
                      f'the "{PIPELINE_KEY}" pipeline; remove the section '
                      f'or add "{FILTER_NAME}" after "{AFTER}", then retry')
    if names.count(FILTER_NAME) != 1 or \
            names[names.index(AFTER) + 1] != FILTER_NAME:
        raise Refused(f'{path}: "{FILTER_NAME}" is in the pipeline but '
                      f'not once, right after "{AFTER}": {" ".join(names)}')
    return 'installed'


def is_installed(text: str) -> bool:
    lines = text.splitlines(keepends=True)
    sections, options = ini.parse(lines)
    if _filter_section(sections, options) is not None:
        return True
    return any(FILTER_NAME in o.value.split()
               for o in ini.find_options(options, COMPOSITE, PIPELINE_KEY))


def add_filter(path: str, text: str) -> str:
    """``text`` with the filter defined and placed in the pipeline."""
    lines = text.splitlines(keepends=True)
    _sections, _options, option, names = _pipeline(path, lines)
    position = names.index(AFTER) + 1
    names.insert(position, FILTER_NAME)
    key_line = lines[option.start]
    prefix = key_line[:len(key_line) - len(key_line.lstrip())]
    new = lines[:option.start] + \
        [f'{prefix}{PIPELINE_KEY} = {" ".join(names)}\n'] + \
        lines[option.end:]
    if new and not new[-1].endswith('\n'):
        new[-1] += '\n'
    if new and new[-1].strip():
        new.append('\n')
    new.append(FILTER_TEXT)
    return ''.join(new)


def remove_filter(text: str, details: dict | None = None) -> str:
    """``text`` without the filter: the reverse of ``add_filter`` for a
    file that was changed since install."""
    lines = text.splitlines(keepends=True)
    sections, options = ini.parse(lines)
    drop: set[int] = set()
    for section in ini.find_sections(sections, FILTER_SECTION):
        end = section.end
        while end > section.start + 1 and not lines[end - 1].strip():
            end -= 1
        # The blank line add_filter put before the section goes with it.
        start = section.start
        if start > 0 and not lines[start - 1].strip():
            start -= 1
        drop.update(range(start, end))
    replace: dict[int, str] = {}
    for option in ini.find_options(options, COMPOSITE, PIPELINE_KEY):
        names = [n for n in option.value.split() if n != FILTER_NAME]
        line = lines[option.start]
        prefix = line[:len(line) - len(line.lstrip())]
        replace[option.start] = f'{prefix}{PIPELINE_KEY} = {" ".join(names)}\n'
        drop.update(range(option.start + 1, option.end))
    out = []
    for index, line in enumerate(lines):
        if index in replace:
            out.append(replace[index])
        elif index not in drop:
            out.append(line)
    return ''.join(out)
