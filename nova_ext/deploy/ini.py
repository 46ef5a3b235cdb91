"""Line-level reading of INI files, so edits keep everything else intact.

``configparser`` would rewrite the whole file (comments, order, spacing);
operators diff these files and upgrades merge them, so the tool changes
only the lines it must.
"""

import dataclasses
import re

_SECTION = re.compile(r'^\[(?P<name>[^\]]+)\]\s*$')
_OPTION = re.compile(r'^(?P<key>[^\s#;=:\[][^=:]*?)\s*[=:]\s*(?P<value>.*)$')


@dataclasses.dataclass
class Option:
    section: str
    key: str
    value: str
    start: int  # index of the key line
    end: int  # index after its last continuation line


@dataclasses.dataclass
class Section:
    name: str
    start: int  # index of the header line
    end: int  # index after its last line


def parse(lines: list[str]) -> tuple[list[Section], list[Option]]:
    sections: list[Section] = []
    options: list[Option] = []
    current: Section | None = None
    option: Option | None = None
    for index, raw in enumerate(lines):
        line = raw.rstrip('\n')
        if option is not None and line[:1] in (' ', '\t') and line.strip() \
                and not line.lstrip().startswith(('#', ';')):
            option.value += ' ' + line.strip()
            option.end = index + 1
            continue
        option = None
        header = _SECTION.match(line)
        if header:
            if current is not None:
                current.end = index
            current = Section(header.group('name').strip(), index, index + 1)
            sections.append(current)
            continue
        match = _OPTION.match(line)
        if match and current is not None:
            option = Option(current.name, match.group('key').strip(),
                            match.group('value').strip(), index, index + 1)
            options.append(option)
    if current is not None:
        current.end = len(lines)
    return sections, options


def find_options(options: list[Option], section: str,
                 key: str) -> list[Option]:
    return [o for o in options if o.section == section and o.key == key]


def find_sections(sections: list[Section], name: str) -> list[Section]:
    return [s for s in sections if s.name == name]
