"""Every cloud call the plugin makes, through openstacksdk.

Views, forms and tables call only these modules, so unit tests mock them at
this boundary and the functions themselves are tested against a loopback
HTTP server speaking Nova's API.
"""

from xloud_dashboard.api import elastic

__all__ = ['elastic']
