"""Django settings of the plugin's tests: Horizon's own test settings with
the plugin's enabled files and its compute policy rules."""

import os

from openstack_dashboard import enabled as horizon_enabled
from openstack_dashboard import theme_settings
from openstack_dashboard.test.settings import *  # noqa: F403
from openstack_dashboard.utils import settings as settings_utils

import xloud_dashboard
from xloud_dashboard import enabled as xloud_enabled

# Horizon's test settings already ran update_dashboards with Horizon's own
# enabled files; start again from the configuration they started from.
INSTALLED_APPS = [app for app in INSTALLED_APPS  # noqa: F405
                  if app not in HORIZON_CONFIG['plugins']]  # noqa: F405
HORIZON_CONFIG = {
    key: HORIZON_CONFIG[key]  # noqa: F405
    for key in ('password_validator', 'user_home', 'help_url', 'exceptions',
                'xstatic_lib_files')
}
HORIZON_CONFIG.update(angular_modules=[], js_files=[])
settings_utils.update_dashboards(
    [xloud_enabled, horizon_enabled], HORIZON_CONFIG,  # noqa: F405
    INSTALLED_APPS)
settings_utils.find_static_files(HORIZON_CONFIG, AVAILABLE_THEMES,  # noqa: F405
                                 THEME_COLLECTION_DIR, ROOT_PATH)  # noqa: F405

POLICY_DIRS = {
    **POLICY_DIRS,  # noqa: F405
    'compute': [*POLICY_DIRS.get('compute', []),  # noqa: F405
                os.path.join(os.path.dirname(xloud_dashboard.__file__),
                             'conf', 'nova_policy')],
}

# Horizon's view tests render the whole navigation; the extension check
# of the panel has tests of its own.
TEST_GLOBAL_MOCKS_ON_PANELS = {
    **TEST_GLOBAL_MOCKS_ON_PANELS,  # noqa: F405
    'elastic_sizing': {
        'method': ('xloud_dashboard.dashboards.admin.elastic_sizing.panel.'
                   'ElasticSizing.can_access'),
        'return_value': True,
    },
}

# Django's test client and the live server of the browser tests.
ALLOWED_HOSTS = ['testserver', 'localhost', '127.0.0.1']

# What openstack_dashboard/settings.py adds for static files and the unit
# tests do without (they never look at the CSS): SCSS compiled by
# Horizon's filter, the themes' directories for its imports. The browser
# tests and the production pipeline test turn it on.
XLOUD_PRODUCTION_STATIC = {
    'COMPRESS_PRECOMPILERS': (
        ('text/scss', 'horizon.utils.scss_filter.ScssFilter'),
    ),
    'COMPRESS_FILTERS': {
        'css': ('compressor.filters.css_default.CssAbsoluteFilter',),
        'js': ('compressor.filters.jsmin.rJSMinFilter',),
    },
    'STATICFILES_DIRS': [
        *STATICFILES_DIRS,  # noqa: F405
        *theme_settings.get_theme_static_dirs(
            AVAILABLE_THEMES, THEME_COLLECTION_DIR, ROOT_PATH),  # noqa: F405
    ],
}
