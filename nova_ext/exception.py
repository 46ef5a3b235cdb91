"""Exceptions that cross from the compute host to nova-api.

Kept free of libvirt, so that nova-api (which has no libvirt-python)
imports them. Over a real transport they arrive as oslo.messaging's
``RemoteError`` with ``exc_type`` set to the class name (Nova only
rebuilds exceptions of its own ``nova.exception`` module); the in-process
fake transport raises them as they are.
"""

import oslo_messaging as messaging
from nova import exception
from nova.i18n import _


class AdjustmentRefused(exception.NovaException):
    """The compute host did not take the request; nothing was changed."""

    msg_fmt = _('%(reason)s')


def refusal_message(error: Exception) -> str | None:
    """The reason of an AdjustmentRefused however it arrived, else None."""
    if isinstance(error, AdjustmentRefused):
        return error.format_message()
    if isinstance(error, messaging.RemoteError) and (
            error.exc_type == AdjustmentRefused.__name__):
        return error.value
    return None
