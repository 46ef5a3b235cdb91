"""Benchmark of xloud-flavor-sync on 1,000 / 10,000 / 100,000 RequestSpecs.

Usage, from the repository root::

    PYTHONPATH=. .venv/bin/python bench/flavor_sync.py [--backend sqlite]
        [--backend mysql] [--sizes 1000,10000,100000] [--repeat 3]
        [--migrate-keys]

Each database gets Nova's nova_api schema from Nova's migrations; the
RequestSpecs are copies of specs written by Nova's own ``RequestSpec``
code (about 4 KB each, with image properties), differing only in their
instance UUID, each with an instance mapping; 10% of them use a flavor
whose extra specs then change. For each size the command runs in a
separate process, ``--repeat`` times over: a dry run, ``--run``,
``--verify``, and ``--restore`` of the run's backup (which makes the 10%
stale again for the next round). The benchmark prints, per mode, the
median of the time the command reports for its own work (without
interpreter start-up) and that time per spec, which stays flat when time
grows linearly, the median wall and CPU time, and the highest peak RSS.
Dirty pages are written back (``sync``) before each run, so that no run
pays for the populating's or another run's writes. On a machine shared
with other work, CPU time is the steadier figure.

With ``--migrate-keys`` the modes are those of the key migration
(``--migrate-keys``, ``--migrate-keys --run``, ``--migrate-keys --verify``
and the restore of its backup, which brings the legacy keys back for the
next round), and a cell database with Nova's schema is added, mapped in
nova_api, holding as many instances as there are RequestSpecs: copies of
an instance row and its ``instance_extra.flavor`` written by Nova's own
``Instance`` code. Every flavor, RequestSpec and instance then holds both
legacy keys, so every row is rewritten.
"""

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import sqlalchemy as sa

from tests.flavor_sync import novaapi

STALE_EVERY = 10
CHUNK = 5000
ELAPSED = re.compile(r'(?:Sync|Restore|Migration) Complete \(([\d.]+) s\)')
SUMMARY = re.compile(r'Summary: .*')


def template_specs(api: novaapi.NovaApi) -> tuple[str, str]:
    """One stale-to-be and one fresh spec, written by Nova."""
    image_properties = {
        'hw_disk_bus': 'virtio', 'hw_vif_model': 'virtio',
        'hw_qemu_guest_agent': True, 'hw_machine_type': 'q35',
        'hw_firmware_type': 'uefi', 'os_distro': 'ubuntu',
        'os_type': 'linux', 'hw_scsi_model': 'virtio-scsi',
        'img_hide_hypervisor_id': True, 'hw_rng_model': 'virtio',
        'hw_video_model': 'virtio', 'hw_pointer_model': 'usbtablet',
    }
    specs = {
        f'aggregate_instance_extra_specs:key{number}': f'value{number}'
        for number in range(20)}
    specs.update({'minimum_cpu': '1', 'minimum_memory': '1024',
                  'aggregate_instance_extra_specs:storage_type': 'ssd'})
    api.create_flavor('stale', vcpus=8, memory_mb=16384,
                      extra_specs=dict(specs))
    api.create_flavor('fresh', vcpus=8, memory_mb=16384,
                      extra_specs=dict(specs))
    texts = []
    for flavorid in ('stale', 'fresh'):
        instance_uuid = api.boot(flavorid)
        spec = api.load(instance_uuid)
        spec.image.properties = spec.image.properties.from_dict(
            image_properties)
        spec.scheduler_hints = {'different_host': [str(uuid.uuid4())
                                                   for _ in range(4)]}
        spec.save()
        texts.append((instance_uuid, api.specs()[instance_uuid]))
    with api.engine.begin() as connection:
        connection.exec_driver_sql('DELETE FROM request_specs')
        connection.exec_driver_sql('DELETE FROM instance_mappings')
    return texts[0], texts[1]


def populate(api: novaapi.NovaApi, count: int) -> int:
    (stale_uuid, stale_spec), (fresh_uuid, fresh_spec) = template_specs(api)
    now = '2026-01-01 00:00:00'
    total_bytes = 0
    with api.engine.connect() as connection:
        for start in range(0, count, CHUNK):
            specs, mappings = [], []
            for number in range(start, min(count, start + CHUNK)):
                instance_uuid = str(uuid.uuid4())
                if number % STALE_EVERY == 0:
                    spec = stale_spec.replace(stale_uuid, instance_uuid)
                else:
                    spec = fresh_spec.replace(fresh_uuid, instance_uuid)
                total_bytes += len(spec)
                specs.append({'uuid': instance_uuid, 'spec': spec,
                              'now': now})
                mappings.append({'uuid': instance_uuid, 'now': now})
            connection.execute(sa.text(
                'INSERT INTO request_specs (instance_uuid, spec, created_at)'
                ' VALUES (:uuid, :spec, :now)'), specs)
            connection.execute(sa.text(
                'INSERT INTO instance_mappings (instance_uuid, project_id, '
                "user_id, queued_for_delete, created_at) VALUES (:uuid, "
                "'project-1', 'user-1', 0, :now)"), mappings)
            connection.commit()
    api.set_extra_specs(
        'stale', aggregate_instance_extra_specs__storage_type='ceph')
    return total_bytes // count


def populate_cell(api: novaapi.NovaApi, url: str, count: int) -> int:
    """A cell with ``count`` copies of an instance Nova created."""
    cell = api.add_cell('cell1', url)
    flavor = novaapi.objects.Flavor.get_by_flavor_id(api.context, 'fresh')
    template_uuid = str(uuid.uuid4())
    cell.create_instance(template_uuid, flavor)
    instances = sa.Table('instances', sa.MetaData(), autoload_with=cell.engine)
    extra = sa.Table('instance_extra', sa.MetaData(),
                     autoload_with=cell.engine)
    with cell.engine.connect() as connection:
        instance_row = dict(connection.execute(sa.select(instances).where(
            instances.c.uuid == template_uuid)).one()._mapping)
        extra_row = dict(connection.execute(sa.select(extra).where(
            extra.c.instance_uuid == template_uuid)).one()._mapping)
        # The template instance goes; its copies are inserted below.
        for table in novaapi.MysqlCellDatabases.TABLES:
            connection.exec_driver_sql(f'DELETE FROM {table}')
        del instance_row['id'], extra_row['id']
        for start in range(0, count, CHUNK):
            uuids = [str(uuid.uuid4())
                     for _ in range(start, min(count, start + CHUNK))]
            connection.execute(instances.insert(), [
                dict(instance_row, uuid=instance_uuid)
                for instance_uuid in uuids])
            connection.execute(extra.insert(), [
                dict(extra_row, instance_uuid=instance_uuid)
                for instance_uuid in uuids])
            connection.commit()
    return len(extra_row['flavor'])


# Runs the command and reports its peak RSS from /proc (VmHWM belongs to
# the process image; getrusage's maxrss would count the parent's memory
# copied at fork).
WRAPPER = """
import atexit, runpy, sys
def report():
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                print('BENCH-VmHWM-kB', line.split()[1], file=sys.stderr)
atexit.register(report)
sys.argv[0] = 'xloud-flavor-sync'
runpy.run_module('nova_ext.flavor_sync.cli', run_name='__main__')
"""
PEAK = re.compile(r'BENCH-VmHWM-kB (\d+)')


def run_tool(url: str, state_dir: str, *args: str) -> dict:
    # Write back what populating (or the previous run) left in the page
    # cache first, so that no run pays for another's writes.
    os.sync()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = usage.ru_utime + usage.ru_stime
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, '-c', WRAPPER, '--connection', url,
         '--state-dir', state_dir, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    output, errors = process.communicate()
    wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    log_file = os.path.join(state_dir, 'flavor-sync.log')
    with open(log_file) as log:
        last_run = log.read().rsplit('=== Starting', 1)[-1]
    elapsed = ELAPSED.search(last_run)
    summary = SUMMARY.search(output)
    peak = PEAK.search(errors)
    if elapsed is None or summary is None or peak is None:
        raise SystemExit(f'the command failed:\n{output}{errors}')
    return {'wall': wall, 'cpu': cpu, 'work': float(elapsed.group(1)),
            'rss_mib': int(peak.group(1)) / 1024,
            'summary': summary.group(0)}


MODES = (('dry-run', ()), ('run', ('--run',)), ('verify', ('--verify',)),
         ('restore', ('--restore', '{backup}', '--run')))
MIGRATION_MODES = (
    ('dry-run', ('--migrate-keys',)), ('run', ('--migrate-keys', '--run')),
    ('verify', ('--migrate-keys', '--verify')),
    ('restore', ('--restore', '{backup}', '--run')))


def bench(backend: str, sizes: list[int], workdir: str, repeat: int,
          migrate_keys: bool = False) -> None:
    novaapi.prepare_nova()
    if backend == 'mysql':
        reason = novaapi.mysql_available()
        if reason:
            print(f'{backend}: skipped ({reason})')
            return
    print(f'\n{backend}: median of {repeat} runs; work = what the command '
          'reports for itself; wall and CPU (user+sys) include interpreter '
          'start-up; the restore puts the stale specs back for the next run')
    modes = MIGRATION_MODES if migrate_keys else MODES
    if migrate_keys:
        print('key migration: as many instances in one cell as specs; '
              'us/spec is per RequestSpec + instance pair')
    print(f'{"specs":>8} {"bytes/spec":>10} {"mode":>8} {"work s":>7} '
          f'{"us/spec":>7} {"wall s":>7} {"CPU s":>6} {"peak RSS MiB":>12}'
          '  summary')
    for size in sizes:
        directory = tempfile.mkdtemp(dir=workdir)
        cells = None
        if backend == 'sqlite':
            template = novaapi.SqliteTemplate(directory)
            url = template.new_database(directory)
            database = None
            if migrate_keys:
                [cell_url] = novaapi.SqliteCellTemplate(
                    directory).new_databases(directory, ['cell1'])
        else:
            database = novaapi.MysqlDatabase()
            url = database.url
            if migrate_keys:
                cells = novaapi.MysqlCellDatabases(1)
                [cell_url] = cells.urls
        api = novaapi.NovaApi(url, backend)
        try:
            spec_bytes = populate(api, size)
            if migrate_keys:
                flavor_bytes = populate_cell(api, cell_url, size)
                print(f'{"":>8} instance_extra.flavor: {flavor_bytes} bytes')
            state_dir = os.path.join(directory, 'state')
            results: dict[str, list[dict]] = {mode: [] for mode, _ in modes}
            for _ in range(repeat):
                for mode, args in modes:
                    backup = _newest_backup(state_dir)
                    results[mode].append(run_tool(
                        url, state_dir,
                        *[arg.format(backup=backup) for arg in args]))
            for mode, _ in modes:
                runs = results[mode]
                work, wall, cpu = (
                    statistics.median(run[key] for run in runs)
                    for key in ('work', 'wall', 'cpu'))
                print(f'{size:>8} {spec_bytes:>10} {mode:>8} {work:>7.2f} '
                      f'{work / size * 1e6:>7.1f} {wall:>7.2f} {cpu:>6.2f} '
                      f'{max(run["rss_mib"] for run in runs):>12.1f}  '
                      f'{runs[-1]["summary"]}', flush=True)
        finally:
            api.close()
            if database is not None:
                database.drop()
            if cells is not None:
                cells.drop()


def _newest_backup(state_dir: str) -> str:
    directory = os.path.join(state_dir, 'backups')
    if not os.path.isdir(directory):
        return ''
    names = sorted(name for name in os.listdir(directory)
                   if name.endswith('.jsonl'))
    return os.path.join(directory, names[-1]) if names else ''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--backend', action='append',
                        choices=('sqlite', 'mysql'))
    parser.add_argument('--sizes', default='1000,10000,100000')
    parser.add_argument('--workdir', default=None)
    parser.add_argument('--repeat', type=int, default=3,
                        help='runs of each mode per size (the median is '
                             'printed)')
    parser.add_argument('--migrate-keys', action='store_true',
                        help='bench the key migration (with a cell) '
                             'instead of the sync')
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(',')]
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        for backend in args.backend or ['sqlite', 'mysql']:
            bench(backend, sizes, workdir, args.repeat, args.migrate_keys)


if __name__ == '__main__':
    main()
