"""Runs Nova's own libvirt functional tests (shipped in the nova wheel)
with this project's compute driver, as an operator configures it.

Loaded with ``pytest -p tests.peers.nova_plugin --pyargs
nova.tests.functional.libvirt...``. ``XLOUD_PEER_DRIVER=stock`` keeps
Nova's own driver, for the side-by-side comparison: every test must end
the same with both.
"""

import importlib
import os
import tempfile

DRIVER = 'xloud.XloudLibvirtDriver'


def pytest_configure(config) -> None:
    # First: patches eventlet before Nova's test packages are imported,
    # and keeps pytest's bound test method through Nova's cleanup.
    importlib.import_module('tests.nova.conftest')
    stock = os.environ.get('XLOUD_PEER_DRIVER') == 'stock'
    # Nova's tests look for api-paste.ini in a source tree; the wheel
    # installs it under <venv>/etc. With the extension, the pipeline has
    # its filter, placed by the install tool's own code.
    harness = importlib.import_module('tests.nova.base')
    paste = (harness.nova_sample_paste_config() if stock else
             harness.write_paste_config(tempfile.mkdtemp(
                 prefix='xloud-peer-paste-')))
    conf_fixture = importlib.import_module('nova.tests.fixtures.conf')
    conf_set_up = conf_fixture.ConfFixture.setUp

    def set_up_with_paste(self) -> None:
        conf_set_up(self)
        self.conf.set_default('api_paste_config', paste, group='wsgi')

    conf_fixture.ConfFixture.setUp = set_up_with_paste
    if stock:
        return
    base = importlib.import_module('nova.tests.functional.libvirt.base')
    fake = importlib.import_module('tests.nova.fakelibvirt')
    setup = base.ServersTestBase._setup_compute_service
    set_up = base.ServersTestBase.setUp

    def elastic_setup(self) -> None:
        setup(self)
        self.flags(compute_driver=DRIVER)

    def elastic_set_up(self, *args, **kwargs) -> None:
        set_up(self, *args, **kwargs)
        # Nova's fake libvirt taught what the elastic driver calls.
        self.useFixture(fake.ElasticLibvirtFixture())

    base.ServersTestBase._setup_compute_service = elastic_setup
    base.ServersTestBase.setUp = elastic_set_up
