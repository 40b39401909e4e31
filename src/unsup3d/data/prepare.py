"""Running preparation jobs: in parallel, with a progress bar, each one's output written atomically,
jobs whose output exists (and passes its check) skipped, and a job that meets a degenerate scene warned
about and skipped.

Faults this module is built to survive:

- a killed preparation: every output is written under a temporary name and renamed into place, so what
  exists is finished and a rerun resumes where it stopped; the temporaries a dead process left are
  removed by the next preparation of the same folder (:func:`sweep_stale_temps`);
- a damaged output (a truncated ``.npy``): a job's ``check`` finds it and the job runs again;
- two processes preparing one folder: :func:`preparation_lock` makes the second wait for the first
  (``fcntl.flock`` on ``<root>/.lock``, released by the kernel when its holder dies), then find the
  work done.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

try:
    import fcntl
except ImportError:  # not POSIX: preparations of one folder must not run at once
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: the lock file of a folder under preparation
LOCK_NAME = ".lock"
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"
# Temporaries are ".<name>.tmp-<host>-<pid>-<hex8>[.npy]" (".old-" for a folder being replaced): the
# host and pid tell a later preparation whether their writer is dead.
_TEMP = re.compile(r"^\..+\.(?:tmp|old)-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[0-9a-f]{8}(?:\.npy)?$")


#: what a job's check answers for an output that is whole but out of date (made with other settings or
#: from other inputs): the job runs again without the warning a damaged output gets
STALE = "other settings"


@dataclass(frozen=True)
class Job:
    """``fn(*args)`` writes ``output`` (atomically); ``name`` is what a warning calls it.

    ``check(output)`` says what is wrong with an existing output (or None); a job whose output has a
    problem runs again, with a warning unless the problem is :data:`STALE`.
    """

    name: str
    output: Path
    fn: Callable[..., Any]
    args: tuple = field(default_factory=tuple)
    check: Callable[[Path], str | None] | None = None


def _run(job: Job) -> tuple[str, str | None]:
    try:
        job.fn(*job.args)
    except ValueError as e:  # a degenerate input: skip it, keep the rest
        return job.name, str(e)
    return job.name, None


def _needs_run(job: Job) -> bool:
    if not job.output.exists():
        return True
    problem = job.check(job.output) if job.check is not None else None
    if problem and problem != STALE:
        warnings.warn(f"redoing {job.name}: its output {job.output} is damaged ({problem})", stacklevel=3)
    return problem is not None


def run_jobs(jobs: Sequence[Job], workers: int = 1, desc: str = "preparing") -> list[str]:
    """Run the jobs whose output does not exist yet (or fails its check); return the names of those
    skipped as unusable.

    ``workers > 1`` runs them in that many processes. Errors other than ``ValueError`` (a missing
    file, a bug) stop the preparation: what was finished stays, and a rerun resumes.
    """
    todo = [j for j in jobs if _needs_run(j)]
    skipped: list[str] = []
    if not todo:
        return skipped
    bar = tqdm(total=len(todo), desc=desc, unit="item", dynamic_ncols=True)
    try:
        if workers <= 1:
            results = (_run(j) for j in todo)
            for name, problem in results:
                _note(name, problem, skipped)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for fut in as_completed([pool.submit(_run, j) for j in todo]):
                    _note(*fut.result(), skipped)
                    bar.update()
    finally:
        bar.close()
    return skipped


def _note(name: str, problem: str | None, skipped: list[str]) -> None:
    if problem is not None:
        warnings.warn(f"skipping {name}: {problem}", stacklevel=3)
        skipped.append(name)


# -- atomic writes -------------------------------------------------------------------------------


def temp_path(path: Path, kind: str = "tmp") -> Path:
    """A hidden sibling of ``path`` to write before renaming onto it, named so that
    :func:`sweep_stale_temps` knows its writer (host and pid); ``.npy`` files keep their suffix
    because ``numpy.save`` appends one otherwise."""
    suffix = ".npy" if path.suffix == ".npy" else ""
    base = path.stem if suffix else path.name
    return path.parent / f".{base}.{kind}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> bool:
    """Write ``text`` to ``path`` through a temporary file and a rename, unless the file already holds
    exactly ``text``: then it is left alone (inode and mtime), so a cached rerun rewrites nothing.
    Returns whether it wrote."""
    path = Path(path)
    try:
        if path.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def write_json_atomic(path: Path, data: Any) -> bool:
    """Write ``data`` as JSON to ``path`` with :func:`write_text_atomic` (a file already holding the
    same JSON is left alone). Returns whether it wrote."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def save_npy_atomic(path: Path, array: Any) -> None:
    """``numpy.save`` through a temporary file and a rename (no pickles)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        np.save(tmp, np.asarray(array), allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_dir(src: Path, dst: Path) -> None:
    """Rename the finished folder ``src`` onto ``dst``, replacing what is there.

    Safe against another process doing the same at the same moment (both wrote a complete folder, so
    either one may win): a rename onto a non-empty folder fails, so the old one is moved aside first,
    and a move that loses a race is retried.
    """
    for _ in range(100):
        try:
            os.rename(src, dst)
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        old = temp_path(dst, "old")
        try:
            os.rename(dst, old)
        except FileNotFoundError:  # another process moved it aside first: try again
            continue
        shutil.rmtree(old, ignore_errors=True)
    raise OSError(f"{dst}: could not replace it with {src} (other processes keep replacing it)")


# -- reading caches ------------------------------------------------------------------------------


def npy_problem(path: Path) -> str | None:
    """What makes ``path`` unusable as a plain ``.npy`` array (missing, not ``.npy``, holding pickled
    objects, truncated), read from its header only; None when it is sound."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:
                return f"unknown .npy format version {version}"
            shape, _, dtype = read_header(f)
            start = f.tell()
    except FileNotFoundError:
        return "it is missing"
    except (OSError, ValueError, EOFError) as e:
        return f"not a .npy array ({e})"
    if dtype.hasobject:
        return "it holds Python objects (a pickle), which are never loaded"
    expected = start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    if size < expected:
        return f"it is truncated ({size} of {expected} bytes)"
    return None


def load_npy(path: str | os.PathLike, mmap_mode: str | None = None) -> np.ndarray:
    """``numpy.load`` of a cache file without pickles; a pickled, truncated or foreign file is a
    ``ValueError`` naming it (a missing one stays ``FileNotFoundError``)."""
    path = Path(path)
    try:
        return np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
    except FileNotFoundError:
        raise
    except (ValueError, EOFError, OSError) as e:
        why = npy_problem(path) or str(e)
        raise ValueError(f"{path}: cannot be read as a plain numpy array: {why}") from e


# -- one preparation of a folder at a time -------------------------------------------------------

_held: dict[str, int] = {}  # lock files this process holds -> nesting depth


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_stale_temps(root: str | os.PathLike) -> list[Path]:
    """Remove the temporaries under ``root`` whose writer (a process of this host) is dead, e.g. the
    half-written scene of a killed preparation; returns what was removed.

    Temporaries of live processes, and of other hosts (their pids mean nothing here), are left.
    """
    removed = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            m = _TEMP.match(name)
            if m and m["host"] == _HOST and not _alive(int(m["pid"])):
                _remove(Path(dirpath) / name)
                removed.append(Path(dirpath) / name)
        dirnames[:] = [d for d in dirnames if not _TEMP.match(d)]
    return removed


def _holder(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"pid {info['pid']} on {info['host']}, since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def preparation_lock(root: str | os.PathLike) -> Iterator[None]:
    """Hold ``<root>/.lock`` (``fcntl.flock``) while preparing ``root``: a second process preparing the
    same folder waits, saying so, and then finds the work done. Re-entrant within a process. On
    entry (the outermost one), temporaries that dead processes left are removed.

    Where the folder cannot take a lock file (a read-only dataset), preparation goes on without one.
    """
    root = Path(root)
    lock = root / LOCK_NAME
    key = str(lock.absolute())
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o664)
    except OSError as e:
        log.info("%s: no lock file (%s); preparing without one", root, e)
        yield
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning(
                    "%s is being prepared by %s; waiting for it to finish (lock file %s)",
                    root, _holder(lock), lock,
                )  # fmt: skip
                fcntl.flock(fd, fcntl.LOCK_EX)
                log.warning("%s: the other preparation finished; going on", root)
        os.ftruncate(fd, 0)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.write(fd, json.dumps(holder).encode())
        _held[key] = 1
        sweep_stale_temps(root)
        yield
    finally:
        _held.pop(key, None)
        os.close(fd)  # releases the lock
