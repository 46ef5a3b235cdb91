"""Reversible edits of Nova's configuration files.

Every edit keeps a byte-exact backup beside the file and a small state
record (what the file looked like before and after, plus what the edit
needs to be undone by hand). Uninstall restores the backup when the file is
still exactly as the edit left it; when someone changed the file since,
the edit is reversed in place instead so their change survives, and the
backup is kept for the operator to compare.
"""

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

BACKUP_SUFFIX = '.xloud-backup'
STATE_SUFFIX = '.xloud-state.json'


class Refused(Exception):
    """A request the tool will not carry out; nothing was changed."""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def state_path(path: Path) -> Path:
    return path.with_name(path.name + STATE_SUFFIX)


@dataclasses.dataclass
class EditRecord:
    """What one install changed in one file."""

    file: str
    backup: str
    sha256_before: str
    sha256_after: str
    installed_at: str
    details: dict

    @classmethod
    def load(cls, path: Path) -> 'EditRecord | None':
        record = state_path(path)
        if not record.exists():
            return None
        try:
            return cls(**json.loads(record.read_text()))
        except (ValueError, TypeError) as exc:
            raise Refused(f'{record} is not a state record written by this '
                          f'tool ({exc}); move it away and retry') from None

    def save(self, path: Path) -> None:
        _write_atomically(state_path(path),
                          json.dumps(dataclasses.asdict(self), indent=2,
                                     sort_keys=True) + '\n',
                          like=None)


def read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise Refused(f'{what} not found: {path} (give its location with '
                      f'the matching --option)')
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise Refused(f'cannot read {what} {path}: {exc}') from None


def _write_atomically(path: Path, text: str, like: Path | None) -> None:
    """Replace ``path`` in one rename, keeping the mode and owner of
    ``like`` (Nova's services must still be able to read the file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.')
    try:
        with os.fdopen(fd, 'w') as handle:
            handle.write(text)
        if like is not None and like.exists():
            shutil.copymode(like, tmp)
            st = like.stat()
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _restore_atomically(backup: Path, path: Path) -> None:
    """Put ``backup`` back at ``path`` in one rename, with its mode, owner
    and times: byte for byte the file as it was before install."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.')
    os.close(fd)
    try:
        shutil.copy2(backup, tmp)
        if os.geteuid() == 0:
            st = backup.stat()
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_writable(path: Path) -> None:
    """Refuse before touching anything when the edit could not complete."""
    if not os.access(path.parent, os.W_OK):
        raise Refused(f'cannot write beside {path} (backup and state files '
                      f'go there): run as the owner of {path.parent}')


def check_can_edit(path: Path) -> None:
    backup = backup_path(path)
    if backup.exists():
        raise Refused(f'{backup} already exists from an earlier install; '
                      f'restore or remove it before installing again')
    check_writable(path)


def apply_edit(path: Path, new_text: str, details: dict) -> EditRecord:
    """Back ``path`` up, write ``new_text`` and record both checksums."""
    check_can_edit(path)
    backup = backup_path(path)
    before = sha256(path)
    shutil.copy2(path, backup)
    _write_atomically(path, new_text, like=path)
    record = EditRecord(
        file=str(path), backup=str(backup), sha256_before=before,
        sha256_after=sha256(path),
        installed_at=datetime.datetime.now(datetime.UTC).isoformat(
            timespec='seconds'),
        details=details)
    record.save(path)
    return record


@dataclasses.dataclass
class UndoResult:
    path: Path
    action: str  # 'restored', 'reversed', 'absent'
    message: str


def undo_edit(path: Path, is_installed: Callable[[str], bool],
              reverse: Callable[[str, dict], str]) -> UndoResult:
    """Undo what ``apply_edit`` did, the safest way the file allows."""
    text = read_text(path, 'file')
    record = EditRecord.load(path)
    backup = backup_path(path)
    if record is not None and sha256(path) == record.sha256_after:
        if not backup.exists() or sha256(backup) != record.sha256_before:
            raise Refused(f'the backup {backup} is missing or does not '
                          f'match the checksum recorded at install; not '
                          f'restoring it (see {state_path(path)})')
        check_writable(path)
        _restore_atomically(backup, path)
        backup.unlink()
        state_path(path).unlink()
        return UndoResult(path, 'restored',
                          f'restored {path} from its backup')
    kept = (f'; the backup from install time is kept at {backup}'
            if backup.exists() else '')
    if not is_installed(text):
        if record is not None:
            state_path(path).unlink()
        return UndoResult(path, 'absent',
                          f'{path}: the extension is not configured here; '
                          f'nothing to undo{kept}')
    check_writable(path)
    new_text = reverse(text, record.details if record else {})
    _write_atomically(path, new_text, like=path)
    if record is not None:
        state_path(path).unlink()
    return UndoResult(path, 'reversed',
                      f'{path} changed since install: removed only the '
                      f'extension\'s settings{kept}')
