"""The plugin's assets through Horizon's production pipeline, and the
wheel that carries them.

``collectstatic`` and django-compressor's offline ``compress`` run in
subprocesses with ``tests.dashboard.production_settings`` (the
``production_static`` fixture), as an operator runs them after installing
the plugin: a plugin SCSS that does not compile on its own, or a file the
finders cannot see, fails here. The browser tests serve what they made.
"""

import json
import os
import sys
import zipfile

from tests.dashboard.conftest import ROOT, run


def test_collectstatic_finds_the_plugin_assets(production_static):
    name = 'xloud_dashboard/scss/elastic_sizing.scss'
    assert (production_static / name).read_text() == (
        ROOT / 'static' / name).read_text()
    for script in ('elastic_sizing.js', 'host_exposure.js'):
        assert (production_static / 'xloud_dashboard/js' / script).is_file()


def test_offline_compress_includes_the_plugin(production_static):
    output = production_static / 'dashboard'
    assert json.loads((output / 'manifest.json').read_text())
    css = [path.read_text() for path in (output / 'css').iterdir()]
    # Compiled, not copied: nested selectors and variables are resolved.
    assert any('.xloud-elastic-sizing td.xloud-current' in text
               and '$xloud' not in text for text in css)
    js = [path.read_text() for path in (output / 'js').iterdir()]
    assert any('xloud-memory-hint' in text for text in js)
    assert any('xloud-exposure-headroom' in text for text in js)
    assert any('.xloud-host-exposure .xloud-exposure-over '
               '.xloud-exposure-headroom' in text for text in css)


def test_wheel_carries_what_production_needs(tmp_path):
    run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
         '--no-build-isolation', '-q', '-w', str(tmp_path), str(ROOT)],
        dict(os.environ), timeout=300)
    wheel, = tmp_path.glob('*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    panel = 'xloud_dashboard/dashboards/admin/elastic_sizing/'
    for expected in (
            'xloud_dashboard/enabled/_2190_admin_elastic_sizing_panel.py',
            'xloud_dashboard/static/xloud_dashboard/scss/elastic_sizing.scss',
            'xloud_dashboard/static/xloud_dashboard/js/elastic_sizing.js',
            'xloud_dashboard/static/xloud_dashboard/js/host_exposure.js',
            'xloud_dashboard/templates/xloud_dashboard/_size_limits.html',
            'xloud_dashboard/conf/nova_policy/xloud_elastic_sizing.yaml',
            panel + 'templates/elastic_sizing/_adjust.html',
            panel + 'templates/elastic_sizing/_host_exposure.html',
            panel + 'panel.py'):
        assert expected in names, expected
