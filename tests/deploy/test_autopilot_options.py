"""``python -m deploy.localcloud up --autopilot KEY=VALUE``: the local
cloud's nova.conf gets ``[xloud_autopilot] KEY = VALUE``, as nova-compute
reads it; what it would not take is refused before anything starts."""

import subprocess
import sys

import pytest
from oslo_config import cfg

from deploy.localcloud import configs, layout
from nova_ext import conf as extension_conf

SCALED_DOWN = ['mode=on', 'interval=10', 'min_samples=2', 'grow_after=20',
               'shrink_after = 30', 'major_faults_per_second=0.5']
EXTENSION = configs.Extension(paste_filter=True, compute_driver=True,
                              dashboard_enabled_files=())


def read_as_nova_compute(nova_conf: str, tmp_path) -> cfg.ConfigOpts:
    """The generated nova.conf read with the extension's own options."""
    path = tmp_path / 'nova.conf'
    path.write_text(nova_conf)
    conf = cfg.ConfigOpts()
    for group, opts in extension_conf.list_opts():
        conf.register_group(group)
        conf.register_opts(opts, group=group)
    conf(['--config-file', str(path)], project='nova',
         default_config_files=[], default_config_dirs=[])
    return conf


def test_the_options_reach_nova_conf_as_nova_compute_reads_them(tmp_path):
    options = configs.autopilot_options(SCALED_DOWN)
    assert options == {'mode': 'on', 'interval': '10', 'min_samples': '2',
                       'grow_after': '20', 'shrink_after': '30',
                       'major_faults_per_second': '0.5'}
    lay = layout.Layout(tmp_path / 'state', layout.Ports(),
                        hypervisor='qemu')
    text = configs.nova_conf(lay, EXTENSION, {'accept_timeout': 5},
                             virt_type='qemu', autopilot=options)
    group = read_as_nova_compute(text, tmp_path).xloud_autopilot
    assert (group.mode, group.interval, group.min_samples, group.grow_after,
            group.shrink_after, group.major_faults_per_second) == (
        'on', 10, 2, 20, 30, 0.5)
    # The others keep the extension's defaults.
    assert (group.cooldown, group.reverse_cooldown) == (300, 1800)
    conf = read_as_nova_compute(text, tmp_path)
    assert conf.xloud.accept_timeout == 5
    # The real host's own [xloud] option is kept beside them.
    assert conf.xloud.boot_memory_confirm_timeout == 45


def test_write_all_puts_them_in_the_nova_conf_it_writes(tmp_path):
    lay = layout.Layout(tmp_path / 'state', layout.Ports())
    configs.write_all(lay, EXTENSION,
                      autopilot=configs.autopilot_options(['mode=recommend']))
    written = (lay.etc / 'nova' / 'nova.conf').read_text()
    assert read_as_nova_compute(
        written, tmp_path).xloud_autopilot.mode == 'recommend'


def test_without_the_option_nova_conf_has_no_autopilot_section(tmp_path):
    lay = layout.Layout(tmp_path / 'state', layout.Ports())
    text = configs.nova_conf(lay, EXTENSION,
                             autopilot=configs.autopilot_options([]))
    assert f'[{configs.AUTOPILOT_SECTION}]' not in text
    assert read_as_nova_compute(text, tmp_path).xloud_autopilot.mode == 'off'


@pytest.mark.parametrize(('pairs', 'message'), [
    (['mode'], "'mode' is not KEY=VALUE"),
    (['=on'], "'=on' is not KEY=VALUE"),
    (['speed=3'], "[xloud_autopilot] has no option 'speed'; it has mode, "
                  "interval,"),
    (['interval=5'], "[xloud_autopilot] interval = '5': Should be greater "
                     "than or equal to 10"),
    (['mode=auto'], "[xloud_autopilot] mode = 'auto': Valid values are "
                    "[off, recommend, on], but found 'auto'"),
    (['cooldown=soon'], "[xloud_autopilot] cooldown = 'soon': invalid "
                        "literal for int()"),
    (['mode=on', 'mode=off'], '[xloud_autopilot] mode is given twice'),
], ids=['no-equals', 'no-key', 'unknown-key', 'below-minimum',
        'not-a-choice', 'not-a-number', 'twice'])
def test_what_nova_compute_would_not_take_is_refused(pairs, message):
    with pytest.raises(configs.OptionError) as refused:
        configs.autopilot_options(pairs)
    assert str(refused.value).startswith(message), refused.value


def test_the_launcher_refuses_it_before_anything_starts(tmp_path):
    state = tmp_path / 'state'
    result = subprocess.run(
        [sys.executable, '-m', 'deploy.localcloud', 'up', '--state-dir',
         str(state), '--autopilot', 'mode=on', '--autopilot', 'speed=3'],
        capture_output=True, text=True, timeout=120, cwd=layout.REPO_ROOT,
        check=False)
    assert result.returncode == 2, result.stderr
    assert ("error: argument --autopilot: [xloud_autopilot] has no option "
            "'speed'") in result.stderr
    assert not state.exists()
