"""Files driftar writes: atomic writes, hashes, confinement, stale temporaries, run locks. Torch-free.

The guarantees every writer and loader in driftar builds on (``docs/reliability.md``):

- **Atomic writes.** A file is written to a hidden temporary beside it (``.NAME.tmp-PID-XXXX``), fsynced
  and renamed into place; a directory is assembled in ``.NAME.tmp-PID-XXXX/`` and renamed. A reader
  sees the old content or the new, never half of it.
- **Temporaries name their writer.** The PID in a temporary's name lets the next writer in the same
  directory remove what a killed process left (:func:`clean_stale_temps`), and only that: a
  temporary of a live process is left alone.
- **Hashes.** Every artifact records the sha256 and size of its files (:func:`file_record`), and every
  load path checks them (:func:`verify_records`) before it reads a byte of weights.
- **Confinement.** A relative path read from a manifest or card stays inside its directory
  (:func:`confined`).
- **One writer per run.** :class:`RunLock` holds an exclusive ``flock`` on ``<run>/.lock`` and names
  the holder's PID in the error a second writer gets.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

# every temporary driftar makes is named ".<name>.tmp-<pid>-..." (".old-" while a directory is swapped out)
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)(?:-.*)?$")


class IntegrityError(RuntimeError):
    """A file whose bytes do not match the hash recorded for it, or a path that escapes its directory."""


# -------------------------------------------------------------------------------------------------
# Atomic writes
# -------------------------------------------------------------------------------------------------


def temp_name(name: str, kind: str = "tmp") -> str:
    """``.NAME.tmp-PID-`` prefix of a temporary (``kind`` "old" for a directory being swapped out)."""
    return f".{name}.{kind}-{os.getpid()}-"


def _normal_mode(path: str | Path, directory: bool = False) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)   # mkstemp/mkdtemp make 0600 / 0700


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_name(path.name))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _normal_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def make_temp_dir(final: str | Path) -> Path:
    """A fresh hidden sibling of ``final`` to assemble a directory in (its name carries this PID)."""
    final = Path(final)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=temp_name(final.name)))
    _normal_mode(tmp, directory=True)
    return tmp


def swap_dir(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` into ``final``; an existing ``final`` (the caller checked it is ours)
    is renamed aside first and deleted only after the new one is in place."""
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=temp_name(final.name, "old")))
        old.rmdir()
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


# -------------------------------------------------------------------------------------------------
# Stale temporaries of dead writers
# -------------------------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM       # exists, owned by someone else
    return True


def stale_temps(directory: str | Path) -> list[Path]:
    """Temporaries in ``directory`` whose writer process is gone."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    out = []
    for p in directory.iterdir():
        m = _TEMP_RE.match(p.name)
        if m and int(m["pid"]) != os.getpid() and not pid_alive(int(m["pid"])):
            out.append(p)
    return sorted(out)


def clean_stale_temps(directory: str | Path) -> list[Path]:
    """Remove what killed writers left in ``directory`` (never a live process's temporary); returns them."""
    removed = stale_temps(directory)
    for p in removed:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return removed


# -------------------------------------------------------------------------------------------------
# Hashes
# -------------------------------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_record(path: str | Path) -> dict[str, Any]:
    """``{"size", "sha256"}`` of one file: what an artifact records of each file it holds."""
    path = Path(path)
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def verify_records(directory: str | Path, records: dict[str, dict[str, Any]], where: str) -> None:
    """Check every file named in ``records`` (relative paths) against its size and sha256.

    ``where`` names the record (e.g. ``"config.json"``) in the error, which also says what to do.
    """
    directory = Path(directory)
    for rel, info in records.items():
        path = confined(directory, rel, where)
        if not path.is_file():
            raise IntegrityError(f"{path} is missing (listed in {where}); the artifact is incomplete: "
                                 "restore or re-create it")
        size = path.stat().st_size
        if "size" in info and size != info["size"]:
            raise IntegrityError(f"{path} is corrupt: {size} bytes, {where} records {info['size']} "
                                 "(truncated or overwritten); restore or re-create it")
        if sha256_file(path) != info.get("sha256"):
            raise IntegrityError(f"{path} is corrupt: its sha256 does not match {where}; restore or re-create it")


DIGEST = "digest"   # key of a JSON record's own sha256 (over the record without it)


def json_digest(record: dict[str, Any]) -> str:
    """sha256 of a JSON record without its ``digest`` key (canonical form: sorted keys, no spaces)."""
    import json
    body = {k: v for k, v in record.items() if k != DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def with_digest(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with ``digest`` set: the record that lists the hashes of the files is hashed too."""
    return {**record, DIGEST: json_digest(record)}


def check_digest(record: dict[str, Any], where: str) -> bool:
    """True when ``record`` carries a matching digest, False when it has none (an older writer);
    an :class:`IntegrityError` when it was edited or damaged after it was written."""
    if DIGEST not in record:
        return False
    if record[DIGEST] != json_digest(record):
        raise IntegrityError(f"{where} was edited or damaged after driftar wrote it (its digest does not match "
                             "its content); restore or re-create it")
    return True


def confined(directory: str | Path, rel: str, where: str = "the manifest") -> Path:
    """``directory / rel`` when ``rel`` is a relative path that stays inside ``directory``; else an error."""
    directory = Path(directory)
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or rel.startswith(("/", "\\")):
        raise IntegrityError(f"{where} names the file {rel!r}, which is not a relative path inside {directory}; "
                             "refusing to open it (the artifact was edited or is not a driftar artifact)")
    root = directory.resolve()
    path = (directory / rel).resolve()
    if path != root and root not in path.parents:
        raise IntegrityError(f"{where} names the file {rel!r}, which points outside {directory}; refusing to open it "
                             "(the artifact was edited or is not a driftar artifact)")
    return directory / rel


# -------------------------------------------------------------------------------------------------
# Destinations
# -------------------------------------------------------------------------------------------------


def _make_dir(directory: Path, option: str, target: Path) -> None:
    """Create ``directory`` (the user gave ``option`` = ``target``) unless an ancestor is a file; it must
    end up writable."""
    for p in [directory, *directory.parents]:
        if p.exists():
            if not p.is_dir():
                raise NotADirectoryError(f"{option} {target}: {p} is a file, not a directory; choose another path")
            break
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"{option} {target}: cannot create {directory} ({e.strerror})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"{option} {target} is not writable (permission denied); choose another path")


def check_writable_file(path: str | Path, option: str = "--out") -> Path:
    """Fail BEFORE any work when ``path`` cannot be written: a directory, a parent that is a file, no
    permission. Creates missing parent directories (nothing else)."""
    path = Path(path)
    if path.is_dir():
        raise PermissionError(f"{option} {path} is a directory; give a file name")
    _make_dir(path.parent, option, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"{option} {path} is not writable (permission denied); choose another path")
    return path


def check_writable_dir(path: str | Path, option: str) -> Path:
    """Fail BEFORE any work when directory ``path`` cannot be created or written (creates it)."""
    path = Path(path)
    _make_dir(path, option, path)
    return path


def read_json_object(path: Path, error: type[Exception], hint: str) -> dict[str, Any]:
    """A JSON file that must hold an object; anything else raises ``error`` naming the file and ``hint``."""
    import json
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is not valid JSON ({e}); {hint}") from None
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object, got {type(data).__name__}; {hint}")
    return data


# -------------------------------------------------------------------------------------------------
# One writer per run directory
# -------------------------------------------------------------------------------------------------


class LockedError(RuntimeError):
    """Another live process holds the lock of a run directory."""


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<dir>/.lock``, released when the process ends (even by kill)."""

    NAME = ".lock"

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / self.NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(f"{self.path.parent} is in use by another driftar process (PID {holder}); wait for it "
                              f"to finish or stop it, then retry") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)          # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

