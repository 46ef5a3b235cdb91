"""The change records of ``nova_ext.sizing`` on an Instance object."""

import datetime

from nova import objects
from nova import test as nova_test
from oslo_utils import timeutils
from oslo_utils.fixture import uuidsentinel as uuids

from nova_ext import sizing

START = datetime.datetime(2026, 11, 23, 8, 0, 0)


class ChangeRecordTest(nova_test.NoDBTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.instance = objects.Instance(
            uuid=uuids.instance, system_metadata={'xloud_flavorid': '1'})

    def _record_at(self, minute: int, request_id: str,
                   details: str) -> None:
        timeutils.set_time_override(START + datetime.timedelta(
            minutes=minute))
        self.addCleanup(timeutils.clear_time_override)
        sizing.RecordUpdate().change(request_id, details).apply_to(
            self.instance)

    def test_newest_first_and_bounded(self) -> None:
        for minute in range(sizing.CHANGE_HISTORY_LIMIT + 1):
            self._record_at(minute, f'req-{minute:02d}',
                            f'vcpus {minute} -> {minute + 1}, persisted')
        changes = sizing.changes(self.instance)
        self.assertEqual([f'req-{minute:02d}' for minute in range(20, 0, -1)],
                         [change.request_id for change in changes])
        self.assertEqual('vcpus 20 -> 21, persisted', changes[0].details)
        self.assertEqual(START + datetime.timedelta(minutes=20),
                         changes[0].changed_at.replace(tzinfo=None))
        sysmeta = self.instance.system_metadata
        self.assertNotIn('xloud_change_req-00', sysmeta)
        # Other records are left alone.
        self.assertEqual('1', sysmeta['xloud_flavorid'])

    def test_value_fits_nova_system_metadata(self) -> None:
        self._record_at(0, 'req-long', 'failed, nothing applied: ' + 'x' * 400)
        value = self.instance.system_metadata['xloud_change_req-long']
        self.assertEqual(255, len(value))
        self.assertEqual('2026-11-23T08:00:00|failed, nothing applied: xx',
                         value[:47])

    def test_malformed_records_are_skipped(self) -> None:
        self.instance.system_metadata = {
            'xloud_change_req-a': 'no separator',
            'xloud_change_req-b': 'not a time|vcpus 1 -> 2',
        }
        self._record_at(0, 'req-c', 'vcpus 2 -> 3, not persisted')
        self.assertEqual(['req-c'], [change.request_id for change
                                     in sizing.changes(self.instance)])
