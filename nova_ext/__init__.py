"""Elastic instance sizing for Nova: boot at a minimum, adjust live."""

# Nova releases this extension is written and tested against; the
# deployment tool refuses to install or verify outside this range because
# the compute side subclasses LibvirtDriver and relies on Nova internals.
SUPPORTED_NOVA = ('34.0.0', '35.0.0')
