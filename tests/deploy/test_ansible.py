"""The Ansible role, run for real against local targets.

``ansible-playbook`` runs ``deploy/ansible/site.yml`` with ``connection:
local`` on an inventory of one API host and two compute hosts. All three
share one throwaway venv holding a Nova 34 install *without* this project,
so the role's wheel step really installs it; each host has its own copies
of Nova's sample ``api-paste.ini`` and ``nova.conf``. The Kolla-specific
commands are the role's variables: here ``xloud_exec`` is empty (the tool
runs directly, not through ``docker exec``), the compute setting is made by
the tool (``xloud_compute_config: tool``), and each restart command
records the host and the compute_driver its nova.conf had at that moment,
so the test can check the order of the rolling restart.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO, make_nova_venv

PLAYBOOK = REPO / 'deploy' / 'ansible' / 'site.yml'
HOSTS = {'controller1': 'api', 'compute1': 'compute', 'compute2': 'compute'}


@pytest.fixture
def fleet(tmp_path, wheels, sample_nova_conf):
    venv = make_nova_venv(tmp_path / 'nova', wheels, with_project=False)
    hosts = {}
    for host in HOSTS:
        directory = tmp_path / 'hosts' / host
        directory.mkdir(parents=True)
        shutil.copy2(venv.api_paste, directory / 'api-paste.ini')
        (directory / 'nova.conf').write_text(sample_nova_conf)
        hosts[host] = directory
    inventory = tmp_path / 'inventory.ini'
    inventory.write_text(
        '[nova-api]\ncontroller1\n\n[compute]\ncompute1\ncompute2\n\n'
        '[all:vars]\nansible_connection=local\n'
        f'ansible_python_interpreter={sys.executable}\n')
    restarts = tmp_path / 'restarts.log'
    host_dir = f'{tmp_path}/hosts/{{{{ inventory_hostname }}}}'
    record = (f'echo "{{{{ inventory_hostname }}}} $(grep ^compute_driver '
              f'{host_dir}/nova.conf)" >> {restarts}')
    extra_vars = {
        'xloud_exec': '',
        'xloud_tool': str(venv.tool),
        'xloud_pip': f'{sys.executable} -m pip --python {venv.python}',
        'xloud_package_source': 'wheel',
        'xloud_wheel': str(wheels['project']),
        'xloud_wheel_dir': host_dir,
        'xloud_wheel_in_nova_env':
            f'{host_dir}/{wheels["project"].name}',
        'xloud_api_paste': f'{host_dir}/api-paste.ini',
        'xloud_nova_conf': f'{host_dir}/nova.conf',
        'xloud_compute_config': 'tool',
        'xloud_restart': {'api': record, 'compute': record},
        'xloud_restart_on': {'api': '{{ inventory_hostname }}',
                             'compute': '{{ inventory_hostname }}'},
        'xloud_verify_retries': 0,
    }
    variables = tmp_path / 'vars.json'
    variables.write_text(json.dumps(extra_vars))
    return {'venv': venv, 'hosts': hosts, 'inventory': inventory,
            'vars': variables, 'restarts': restarts, 'tmp': tmp_path}


def play(fleet, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, 'PIP_NO_INDEX': '1', 'ANSIBLE_NOCOLOR': '1',
           'ANSIBLE_HOST_KEY_CHECKING': 'False',
           'ANSIBLE_LOCAL_TEMP': str(fleet['tmp'] / 'ansible-local'),
           'ANSIBLE_REMOTE_TEMP': str(fleet['tmp'] / 'ansible-remote'),
           'PATH': f'{Path(sys.executable).parent}:{os.environ["PATH"]}'}
    return subprocess.run(
        [str(Path(sys.executable).parent / 'ansible-playbook'), '-i',
         str(fleet['inventory']), str(PLAYBOOK), '-e',
         f'@{fleet["vars"]}', *args],
        capture_output=True, text=True, env=env, timeout=600)


def task_order(output: str) -> list[tuple[str, str, str]]:
    """(task, host, status) in the order ansible-playbook reported them."""
    order, task = [], None
    for line in output.splitlines():
        header = re.match(r'^TASK \[(?:xloud_nova_ext : )?(.*)\] \*', line)
        if header:
            task = header.group(1)
            continue
        result = re.match(r'^(ok|changed|skipping|fatal): \[([\w-]+)', line)
        if result and task:
            order.append((task, result.group(2), result.group(1)))
    return order


def digests(fleet) -> dict[str, str]:
    return {f'{host}/{p.name}': hashlib.sha256(p.read_bytes()).hexdigest()
            for host, directory in fleet['hosts'].items()
            for p in sorted(directory.iterdir())}


def test_rolling_install_verify_and_rollback(fleet):
    before = {k: v for k, v in digests(fleet).items()
              if k.endswith(('api-paste.ini', 'nova.conf'))}

    result = play(fleet)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    order = task_order(result.stdout)

    # One host at a time: every task of a host before the next host's.
    hosts_in_order = [host for _task, host, _status in order]
    assert [h for i, h in enumerate(hosts_in_order)
            if i == 0 or h != hosts_in_order[i - 1]] == list(HOSTS)
    # Each host is restarted after its change and verified after that.
    for host in HOSTS:
        tasks = [(t, s) for t, h, s in order if h == host]
        names = [t for t, _s in tasks]
        assert ('Restart this host\'s Nova service', 'changed') in tasks
        assert names.index('Restart this host\'s Nova service') < \
            names.index('Verify this host before moving on')
        assert ('Verify this host before moving on', 'ok') in tasks
    assert ('Install xloud-elastic next to Nova (its dependencies are '
            'Nova\'s)', 'controller1', 'changed') in order
    assert fleet['restarts'].exists(), result.stdout
    assert fleet['restarts'].read_text().splitlines() == [
        'controller1 ',
        'compute1 compute_driver = xloud.XloudLibvirtDriver',
        'compute2 compute_driver = xloud.XloudLibvirtDriver']
    assert 'ElasticSizingFilter' in result.stdout  # verify's table
    assert (fleet['hosts']['controller1'] / 'api-paste.ini.xloud-backup') \
        .exists()

    result = play(fleet, '-e', 'xloud_state=absent')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    after = digests(fleet)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [k for k in after if '.xloud-' in k]


def test_kolla_override_and_stop_at_the_first_failing_host(fleet):
    """The Kolla path for compute_driver writes Kolla-Ansible's override
    on the deployment host (here: compute1 itself). kolla-ansible is not
    here to merge it into nova.conf, so verify fails on compute1: the roll
    out must stop there and leave compute2 alone."""
    override = fleet['tmp'] / 'kolla' / 'config' / 'nova' / \
        'nova-compute.conf'
    override.parent.mkdir(parents=True)
    override.write_text('[DEFAULT]\ndebug = True\n')
    before = digests(fleet)

    result = play(fleet, '--limit', 'compute',
                  '-e', 'xloud_compute_config=kolla_override',
                  '-e', f'xloud_kolla_compute_override={override}',
                  '-e', 'xloud_deploy_host=compute1',
                  '-e', json.dumps({'xloud_restart_on':
                                    {'compute': 'compute1'}}))
    assert result.returncode != 0
    order = task_order(result.stdout)
    assert ('Set compute_driver in Kolla\'s nova-compute override',
            'compute1', 'changed') in order
    assert ('Verify this host before moving on', 'compute1',
            'fatal') in order, result.stdout[-4000:]
    assert 'compute2' not in {host for _task, host, _status in order}
    assert 'compute_driver = None' in result.stdout  # verify's reason
    assert override.read_text() == (
        '[DEFAULT]\ndebug = True\n'
        '# BEGIN xloud-elastic (deploy/ansible)\n'
        '[DEFAULT]\ncompute_driver = xloud.XloudLibvirtDriver\n'
        '# END xloud-elastic (deploy/ansible)\n')
    assert fleet['restarts'].read_text().splitlines() == ['compute1 ']
    # Only the package and the override changed; nova.conf is Kolla's.
    assert {k: v for k, v in digests(fleet).items()
            if k.startswith('compute2/')} == \
        {k: v for k, v in before.items() if k.startswith('compute2/')}
    assert digests(fleet)['compute1/nova.conf'] == before['compute1/nova.conf']
