"""Django settings of the local cloud's Horizon.

Horizon's own settings, with this repository's ``enabled/`` files added to
the ``openstack_dashboard.local.enabled`` package path.  That is the
package operators copy plugin enabled files into; extending its path
instead loads the plugin exactly the same way without writing into the
installed Horizon.  The launcher passes the state directory and ports in
``LOCALCLOUD_*`` environment variables.
"""

import os
from pathlib import Path

import openstack_dashboard.local.enabled as _local_enabled
from horizon.utils import secret_key as _secret_key

_REPO = Path(__file__).resolve().parents[2]
_STATE = Path(os.environ["LOCALCLOUD_STATE"])
if (_REPO / "enabled").is_dir():
    _local_enabled.__path__.append(str(_REPO / "enabled"))

# Without a SECRET_KEY at import time Horizon's settings write one into the
# installed package (openstack_dashboard/local/.secret_key_store); hand
# them the state directory's key instead, so nothing is left outside it.
_generate_key = _secret_key.generate_or_read_from_file
_secret_key.generate_or_read_from_file = (
    lambda *args, **kwargs: os.environ["LOCALCLOUD_SECRET_KEY"])
try:
    from openstack_dashboard.settings import *  # noqa: E402,F403
finally:
    _secret_key.generate_or_read_from_file = _generate_key
from openstack_dashboard.settings import (  # noqa: E402
    POLICY_DIRS,
    STATICFILES_DIRS,
)

# The plugin ships the defaults of Nova's xloud:elastic_sizing:* rules, so
# that Horizon's policy checks know them (as Nova itself does).
_PLUGIN_POLICY = _REPO / "xloud_dashboard" / "conf" / "nova_policy"
if _PLUGIN_POLICY.is_dir():
    POLICY_DIRS = {**POLICY_DIRS,
                   "compute": [*POLICY_DIRS.get("compute", []),
                               str(_PLUGIN_POLICY)]}

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
SECRET_KEY = os.environ["LOCALCLOUD_SECRET_KEY"]
OPENSTACK_HOST = "127.0.0.1"
OPENSTACK_KEYSTONE_URL = os.environ["LOCALCLOUD_KEYSTONE_URL"]
OPENSTACK_KEYSTONE_DEFAULT_ROLE = "member"
OPENSTACK_ENDPOINT_TYPE = "publicURL"
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
    },
}
# The stylesheets are compiled on first use into the state directory, which
# the static file finders then serve (``runserver --insecure``).
COMPRESS_ENABLED = True
COMPRESS_OFFLINE = False
COMPRESS_ROOT = str(_STATE / "horizon" / "compressed")
Path(COMPRESS_ROOT).mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [*STATICFILES_DIRS, COMPRESS_ROOT]
STATIC_ROOT = str(_STATE / "horizon" / "static")
# There is no network service in the catalog (Nova's Neutron fixture lives
# inside the Nova processes): say so instead of probing for it.
OPENSTACK_NEUTRON_NETWORK = {"enable_router": False, "enable_quotas": False,
                             "enable_fip_topology_check": False}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
