"""Errors of the plugin's cloud calls.

Horizon files every ``openstack.exceptions.HttpException`` under
"unauthorized" and logs the user out, so ``xloud_dashboard.api`` raises
these instead; the enabled file registers them with Horizon's handler.
This module imports nothing from Django, so settings can load it.
"""


class ApiError(Exception):
    """A failed call, with the message Nova gave."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class NotFound(ApiError):
    """The server, flavor or action does not exist (HTTP 404)."""


class Unauthorized(ApiError):
    """The user's token was refused (HTTP 401)."""


RECOVERABLE = (ApiError,)
NOT_FOUND = (NotFound,)
UNAUTHORIZED = (Unauthorized,)
