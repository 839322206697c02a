"""Who owns kvod's data (the catalog's folder, ``/var/lib/kvod`` as the
package makes it: the service user's, setgid to its group), and how a
process that writes there keeps every file usable by the others.

- The daemon and the group's members write files the group may change
  (group bits cleared from the umask; the setgid folder gives them the
  group), so the service can
  later evict what an operator added, and the reverse.
- ``kvod`` run as root becomes the folder's owner before it touches
  anything, so every file it makes is the service's.
"""

from __future__ import annotations

import os


class DataOwnerError(Exception):
    """Root could not become the data's owner."""


def _stat(folder: str):
    try:
        return os.stat(folder)
    except OSError:
        return None


def share_with_group(catalog_path: str) -> None:
    """In the shared layout (the catalog's folder is a setgid folder of a
    group this process is in), make new files group-writable, the catalog
    included: SQLite makes its files 0644 whatever the umask, and its WAL
    and shared-memory files copy the database's mode. Elsewhere nothing
    changes."""
    folder = os.path.dirname(os.path.abspath(catalog_path))
    st = _stat(folder)
    if st is None or not st.st_mode & 0o2000:
        return
    if not (st.st_gid == os.getegid() or st.st_gid in os.getgroups() or os.geteuid() == 0):
        return
    # the group may write; what the unit's UMask= says of others stays
    old = os.umask(0)
    os.umask(old & ~0o070)
    try:
        # an empty file is an empty database; SQLite keeps its mode
        os.close(os.open(catalog_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         0o664))
    except FileExistsError:
        db = os.stat(catalog_path)
        if db.st_uid == os.geteuid() and not db.st_mode & 0o020:
            os.chmod(catalog_path, (db.st_mode & 0o7777) | 0o020)
    except OSError:
        pass  # opening the catalog says what is wrong


def become_owner(folder: str) -> bool:
    """As root, when ``folder`` belongs to another user, become that user
    and its group for the rest of this process; True if it did."""
    st = _stat(folder)
    if st is None or os.geteuid() != 0 or st.st_uid == 0:
        return False
    try:
        os.setgroups([])
        os.setgid(st.st_gid)
        os.setuid(st.st_uid)
    except OSError as exc:
        raise DataOwnerError(f"cannot act as the owner of {folder} (uid {st.st_uid}): "
                             f"{exc}") from None
    return True
