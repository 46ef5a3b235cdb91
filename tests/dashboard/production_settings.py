"""The test settings with what production Horizon adds for static files
(``openstack_dashboard/settings.py``): collected into
``XLOUD_STATIC_ROOT`` and compressed offline, one context per theme."""

import os

from tests.dashboard.settings import *  # noqa: F403

DEBUG = False
STATIC_ROOT = os.environ['XLOUD_STATIC_ROOT']
COMPRESS_ROOT = STATIC_ROOT
COMPRESS_ENABLED = True
COMPRESS_OFFLINE = True
COMPRESS_OFFLINE_CONTEXT = 'horizon.themes.offline_context'
globals().update(XLOUD_PRODUCTION_STATIC)  # noqa: F405
COMPRESS_OUTPUT_DIR = 'dashboard'
COMPRESS_CSS_HASHING_METHOD = 'hash'
# One theme is enough to prove the plugin's assets compile; every theme
# compiles the same plugin files again.
AVAILABLE_THEMES = [('default', 'Default', 'themes/default')]
SELECTABLE_THEMES = AVAILABLE_THEMES
HORIZON_COMPRESS_OFFLINE_CONTEXT_BASE = {
    'WEBROOT': WEBROOT,  # noqa: F405
    'STATIC_URL': STATIC_URL,  # noqa: F405
    'HORIZON_CONFIG': HORIZON_CONFIG,  # noqa: F405
    'NG_TEMPLATE_CACHE_AGE': NG_TEMPLATE_CACHE_AGE,  # noqa: F405
}
