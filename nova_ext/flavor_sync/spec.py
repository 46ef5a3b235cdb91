"""The flavor embedded in a serialized RequestSpec, compared and rewritten.

Nova stores a RequestSpec in ``nova_api.request_specs.spec`` as
``jsonutils.dumps(spec.obj_to_primitive())``: a ``nova_object.*`` envelope
whose ``flavor`` field is itself a ``Flavor`` envelope. Only the fields the
scheduler reads from that copy are synchronised (sizes and extra specs);
everything else, including every envelope's ``nova_object.version`` and
``nova_object.changes``, is written back exactly as it was. Re-serialising
with the standard library's ``json.dumps`` and its default separators is
what ``jsonutils.dumps`` does, so a rewritten spec differs from what Nova
itself would write only in the synchronised values.
"""

import dataclasses
import json
import operator
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import msgspec

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    orjson = None

# Flavor fields copied from the flavors table into the RequestSpec.
SIZE_FIELDS = ('vcpus', 'memory_mb', 'root_gb', 'ephemeral_gb', 'swap')

# How jsonutils.dumps writes the key of the embedded flavor.
_FLAVOR_KEY = '"flavor": '
_embedded_sizes = operator.itemgetter(*SIZE_FIELDS)


class Patch(NamedTuple):
    """``spec[start:end]`` is replaced by ``text``."""

    start: int
    end: int
    text: str

    def applied_to(self, spec: str) -> str:
        return spec[:self.start] + self.text + spec[self.end:]

    @classmethod
    def between(cls, original: str, replacement: str) -> 'Patch':
        """The one span that turns ``original`` into ``replacement``.

        The common head and tail are found by comparing slices (binary
        search), so the work is done in C whatever the texts' length.
        """
        head = _common_length(original, replacement,
                              lambda text, length: text[:length])
        longest_tail = min(len(original), len(replacement)) - head
        tail = _common_length(
            original, replacement,
            lambda text, length: text[len(text) - length:],
            longest_tail)
        return cls(head, len(original) - tail,
                   replacement[head:len(replacement) - tail])


def _common_length(first: str, second: str, part, longest: int | None = None
                   ) -> int:
    """The longest length for which ``part`` of both texts is equal."""
    low = 0
    high = min(len(first), len(second)) if longest is None else longest
    while low < high:
        middle = (low + high + 1) // 2
        if part(first, middle) == part(second, middle):
            low = middle
        else:
            high = middle - 1
    return low


class MalformedSpec(ValueError):
    """The spec column is not a RequestSpec with an embedded Flavor."""


@dataclasses.dataclass(frozen=True)
class Flavor:
    """A flavor as the nova_api ``flavors`` tables define it now."""

    id: int
    flavorid: str
    name: str
    vcpus: int
    memory_mb: int
    root_gb: int
    ephemeral_gb: int
    swap: int
    extra_specs: Mapping[str, str]
    sizes: tuple = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'sizes', tuple(
            getattr(self, name) for name in SIZE_FIELDS))


@dataclasses.dataclass
class FlavorDiff:
    """How the embedded flavor differs from the flavor's definition."""

    added: dict[str, str] = dataclasses.field(default_factory=dict)
    changed: dict[str, tuple[str, str]] = dataclasses.field(
        default_factory=dict)
    removed: dict[str, str] = dataclasses.field(default_factory=dict)
    fields: dict[str, tuple[Any, Any]] = dataclasses.field(
        default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed or
                    self.fields)

    def describe(self) -> list[str]:
        """Human-readable lines, one per kind of difference."""
        lines = []
        if self.fields:
            lines.append('Fields: ' + ', '.join(
                f'{name} {old!r} -> {new!r}'
                for name, (old, new) in self.fields.items()))
        if self.added:
            lines.append(f'Added: {self.added}')
        if self.changed:
            lines.append('Changed: ' + ', '.join(
                f'{key!r}: {old!r} -> {new!r}'
                for key, (old, new) in self.changed.items()))
        if self.removed:
            lines.append(f'Removed: {self.removed}')
        return lines


def loads(text: str | bytes) -> Any:
    """Parse JSON, quickly when orjson is there, exactly like Nova else.

    orjson refuses a few things the standard library accepts (NaN, integers
    beyond 64 bits); those fall back to ``json`` rather than being reported
    as malformed.
    """
    if orjson is not None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def dumps(document: Any) -> str:
    """Serialise like ``oslo_serialization.jsonutils.dumps`` does."""
    return json.dumps(document)


def _envelope_data(envelope: Any, name: str, where: str) -> dict:
    if not isinstance(envelope, dict):
        raise MalformedSpec(f'{where} is not a {name} object')
    if envelope.get('nova_object.name') != name:
        raise MalformedSpec(
            f'{where} is a {envelope.get("nova_object.name")!r} object, '
            f'not {name}')
    data = envelope.get('nova_object.data')
    if not isinstance(data, dict):
        raise MalformedSpec(f'{where} has no nova_object.data')
    return data


def _explain(document: Any) -> None:
    """Raise MalformedSpec saying why ``document`` is not a RequestSpec."""
    data = _envelope_data(document, 'RequestSpec', 'spec')
    flavor = _envelope_data(data.get('flavor'), 'Flavor', 'spec flavor')
    if not isinstance(flavor.get('flavorid'), str):
        raise MalformedSpec('spec flavor has no flavorid')
    if not isinstance(flavor.get('extra_specs', {}), dict):
        raise MalformedSpec('spec flavor extra_specs is not a mapping')
    raise MalformedSpec('spec is not a RequestSpec with a Flavor')


# Embedded flavor texts already classified: specs booted from one version
# of a flavor embed the same text, so a cloud has a handful of them.
_KNOWN_FLAVOR_TEXTS = 256


class _FlavorFields(msgspec.Struct):
    flavorid: str
    name: Any = None
    vcpus: Any = msgspec.UNSET
    memory_mb: Any = msgspec.UNSET
    root_gb: Any = msgspec.UNSET
    ephemeral_gb: Any = msgspec.UNSET
    swap: Any = msgspec.UNSET
    extra_specs: Any = msgspec.UNSET


class _FlavorEnvelope(msgspec.Struct, rename={'name': 'nova_object.name',
                                              'data': 'nova_object.data'}):
    name: Literal['Flavor']
    data: _FlavorFields


_flavor_envelope_decoder = msgspec.json.Decoder(_FlavorEnvelope)


class _FlavorText(msgspec.Struct):
    flavor: msgspec.Raw


class _RequestSpecFlavorText(msgspec.Struct,
                             rename={'name': 'nova_object.name',
                                     'data': 'nova_object.data'}):
    name: Literal['RequestSpec']
    data: _FlavorText


_flavor_text_decoder = msgspec.json.Decoder(_RequestSpecFlavorText)


@dataclasses.dataclass(frozen=True)
class EmbeddedFlavor:
    """What the quick check learnt about a spec's embedded flavor."""

    flavorid: str
    name: Any
    # The flavor's definition now, None when it no longer exists.
    flavor: 'Flavor | None'
    # Whether the embedded copy matches it; None when it no longer exists.
    in_sync: bool | None
    # The embedded flavor envelope's exact text within the spec.
    text: str


class EmbeddedFlavorCheck:
    """Tells, without decoding whole specs, which ones are in sync.

    Every spec is still checked to be valid JSON (msgspec validates what
    it skips), but only the embedded flavor's text is taken out, and each
    distinct text is decoded and compared with its flavor once. Whatever
    this check cannot settle (a spec that is malformed, or written unlike
    Nova writes it) is left to ``RequestSpecDocument``, which gives the
    verdict and the reasons.
    """

    def __init__(self, flavors: Mapping[str, 'Flavor']) -> None:
        self._flavors = flavors
        self._known: dict[bytes, EmbeddedFlavor | None] = {}

    def embedded(self, text: str) -> EmbeddedFlavor | None:
        """The embedded flavor; None when that needs a full parse."""
        try:
            raw = bytes(_flavor_text_decoder.decode(text).data.flavor)
        except msgspec.DecodeError:
            return None
        try:
            return self._known[raw]
        except KeyError:
            pass
        found = self._classify(raw)
        if len(self._known) < _KNOWN_FLAVOR_TEXTS:
            self._known[raw] = found
        return found

    def _classify(self, raw: bytes) -> EmbeddedFlavor | None:
        try:
            fields = _flavor_envelope_decoder.decode(raw).data
        except msgspec.DecodeError:
            return None
        if (fields.extra_specs is not msgspec.UNSET and
                type(fields.extra_specs) is not dict):
            return None
        flavor = self._flavors.get(fields.flavorid)
        in_sync = None
        if flavor is not None:
            extra_specs = ({} if fields.extra_specs is msgspec.UNSET
                           else fields.extra_specs)
            in_sync = ((fields.vcpus, fields.memory_mb, fields.root_gb,
                        fields.ephemeral_gb, fields.swap) == flavor.sizes and
                       extra_specs == flavor.extra_specs)
        return EmbeddedFlavor(fields.flavorid, fields.name, flavor, in_sync,
                              raw.decode())


class RequestSpecDocument:
    """One parsed ``request_specs.spec`` value."""

    def __init__(self, text: str) -> None:
        self._text = text
        try:
            document = loads(text)
        except ValueError as exc:
            raise MalformedSpec(f'spec is not valid JSON: {exc}') from None
        # Every row goes through here: look the way Nova writes it up
        # directly, and work out what is wrong only when that fails.
        try:
            envelope = document['nova_object.data']['flavor']
            flavor = envelope['nova_object.data']
            valid = (document['nova_object.name'] == 'RequestSpec' and
                     envelope['nova_object.name'] == 'Flavor' and
                     type(flavor['flavorid']) is str and
                     type(flavor.get('extra_specs', {})) is dict)
        except (KeyError, TypeError, AttributeError):
            valid = False
        if not valid:
            _explain(document)
        self._document = document
        self._flavor_envelope = envelope
        self.flavor = flavor
        self.flavorid = flavor['flavorid']
        self.flavor_name = flavor.get('name')

    def diff(self, flavor: Flavor) -> FlavorDiff:
        """What the embedded copy lacks compared with ``flavor``."""
        result = FlavorDiff()
        embedded = self.flavor
        # The common case, checked first: nothing differs.
        try:
            in_sync = (embedded.get('extra_specs', {}) == flavor.extra_specs
                       and _embedded_sizes(embedded) == flavor.sizes)
        except KeyError:
            in_sync = False
        if in_sync:
            return result
        for name in SIZE_FIELDS:
            embedded = self.flavor.get(name)
            current = getattr(flavor, name)
            if embedded != current:
                result.fields[name] = (embedded, current)
        embedded_specs = self.flavor.get('extra_specs', {})
        for key, value in flavor.extra_specs.items():
            if key not in embedded_specs:
                result.added[key] = value
            elif embedded_specs[key] != value:
                result.changed[key] = (embedded_specs[key], value)
        for key, value in embedded_specs.items():
            if key not in flavor.extra_specs:
                result.removed[key] = value
        return result

    def synchronised(self, flavor: Flavor) -> str:
        """The spec text with the embedded flavor brought up to date.

        Only the flavor's own text is re-serialised and spliced in when it
        is found once, written the way Nova writes it; that is byte for
        byte what serialising the whole document gives for a spec Nova
        wrote, at a fraction of the cost. Any other spec is re-serialised
        whole.
        """
        _bring_up_to_date(self.flavor, flavor)
        return self._flavor_patch().applied_to(self._text)

    def with_extra_specs(self, extra_specs: Mapping[str, str]) -> Patch:
        """What gives the embedded flavor these extra specs, nothing else
        changed; spliced in as ``synchronised`` does."""
        self.flavor['extra_specs'] = dict(extra_specs)
        return self._flavor_patch()

    def _flavor_patch(self) -> Patch:
        span = embedded_flavor_span(self._text)
        if span is None:
            return Patch(0, len(self._text), dumps(self._document))
        start, end = span
        return Patch(start, end, dumps(self._flavor_envelope))


def _bring_up_to_date(embedded: dict, flavor: Flavor) -> None:
    for name in SIZE_FIELDS:
        embedded[name] = getattr(flavor, name)
    embedded['extra_specs'] = dict(flavor.extra_specs)


def embedded_flavor_text(text: str) -> str | None:
    """The embedded flavor envelope's exact text, without parsing the rest.

    None when ``text`` is not a RequestSpec with a flavor that the decoder
    can take out (malformed, or not written like Nova writes it). The
    decoder still validates the whole text as JSON.
    """
    # The decoder gives the embedded flavor's exact text, whatever the
    # strings around or inside it hold.
    try:
        return bytes(_flavor_text_decoder.decode(text).data.flavor).decode()
    except msgspec.DecodeError:
        return None


def embedded_flavor_span(
        text: str, embedded: str | None = None) -> tuple[int, int] | None:
    """Where the embedded flavor's text is, if found once as Nova writes it.

    ``embedded`` is that text when the caller already took it out.
    """
    if embedded is None:
        embedded = embedded_flavor_text(text)
        if embedded is None:
            return None
    start = text.find(_FLAVOR_KEY + embedded)
    if start < 0 or text.find(_FLAVOR_KEY + embedded, start + 1) >= 0:
        return None
    start += len(_FLAVOR_KEY)
    return start, start + len(embedded)


# Rewritten flavor texts kept by a SpecRewriter: one per flavor version
# the stale specs were booted from, in practice a handful.
_REWRITTEN_FLAVORS_KEPT = 64


class SpecRewriter:
    """``RequestSpecDocument.synchronised`` for many specs at once.

    Instances booted from the same version of a flavor embed the same
    flavor text, so its replacement is worked out once and spliced into
    each of their specs; the result is the same text, without parsing
    every spec in full.
    """

    def __init__(self) -> None:
        self._rewritten: dict[tuple[str, str], str] = {}

    def patch(self, text: str, flavor: Flavor,
              embedded: str | None = None) -> Patch:
        """What brings ``text`` up to date: its embedded flavor replaced,
        or the whole of it when it is not written the way Nova writes
        specs. ``embedded`` is as in EmbeddedFlavor, when known."""
        span = embedded_flavor_span(text, embedded)
        if span is None:
            return Patch(0, len(text),
                         RequestSpecDocument(text).synchronised(flavor))
        start, end = span
        embedded = text[start:end]
        rewritten = self._rewritten.get((flavor.flavorid, embedded))
        if rewritten is None:
            envelope = loads(embedded)
            data = (envelope.get('nova_object.data')
                    if isinstance(envelope, dict) else None)
            if not isinstance(data, dict):
                return Patch(0, len(text),
                             RequestSpecDocument(text).synchronised(flavor))
            _bring_up_to_date(data, flavor)
            rewritten = dumps(envelope)
            if len(self._rewritten) < _REWRITTEN_FLAVORS_KEPT:
                self._rewritten[flavor.flavorid, embedded] = rewritten
        return Patch(start, end, rewritten)
