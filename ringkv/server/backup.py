"""``GET /admin/backup``: a hot backup of one node, streamed as a tar with a manifest.

Job: copy the node's LMDB environment while the node keeps serving, and send the copy
back as an uncompressed tar (``Content-Length`` known up front, so a client can show
progress): first ``manifest.json`` (`Manifest`: the node's id, the cluster's N/R/W, its
advertised addresses, the time, the ringkv version, and the size and SHA-256 of every
file), then the files under ``lmdb/``, the layout `ringkv.server.runtime.open_engine`
opens as ``<data dir>/lmdb``. The same module defines the manifest and checks it, so
the commands that download and restore a backup (`ringkv.tools.backup_commands`) read
exactly what this writes.

What is consistent: LMDB's copy (`storage.lmdb_engine.LmdbEngine.copy_to`) is the
snapshot of ONE read transaction, so the backup holds every batch the node committed
before the copy began and nothing after: every write this node acknowledged by then
(a replica acknowledges only committed writes), its hints, and its meta table, which
holds the node's identity (its signing key), the membership it knew and its tokens,
i.e. its place in the ring. Nothing is torn: each key is as one commit left it.

What is not: writes the node acknowledges after the snapshot, and writes staged but
not yet committed when it was taken, are not in the backup. A node restored from it
restarts with its old identity and place in the ring and simply missed those writes, as
after any downtime: hinted handoff (hints its peers kept for it), read repair and
anti-entropy bring it up to date. A backup of every node restores the whole cluster to
a state at least as new as each node's snapshot.

Invariants:
- The copy runs in a worker thread (LMDB releases the GIL), never on the event loop;
  reading the copy back for the response runs in worker threads too, chunk by chunk.
- One backup per node at a time (another gets 409): each one needs room for a full
  copy on the data directory's disk, where it is staged (``<data dir>/.backup-*``),
  and removed once sent, or once the copy ends if the client went away first (one
  left by a process that died meanwhile is removed by the next backup).
- A stopping node waits for a running copy before closing its engine (an app cleanup
  hook): LMDB must not close an environment a copy still reads.
- A long copy holds its read transaction open: pages freed meanwhile are not reused
  until it ends, so a node under heavy writes grows its data file during a backup.
- A HEAD request answers with the headers of a backup and copies nothing.
- A node on the memory engine answers 409: backups need the durable engine.
- `Manifest.from_json` treats its input as hostile: bounded, every field checked, file
  paths only ``lmdb/<name>`` with plain names, so no path can leave the target.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from gossip.membership import valid_node_id
from ringkv import __version__
from ringkv.server.http_common import error

if TYPE_CHECKING:
    from ringkv.server.runtime import NodeRuntime
    from storage.lmdb_engine import LmdbEngine

__all__ = [
    "ENV_DIR",
    "FORMAT",
    "MANIFEST_NAME",
    "BackupEndpoint",
    "check_path",
    "FileEntry",
    "Manifest",
    "register",
    "sha256_file",
    "tar_header",
]

log = logging.getLogger("ringkv")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

FORMAT: Final = "ringkv-backup/1"
MANIFEST_NAME: Final = "manifest.json"
ENV_DIR: Final = "lmdb"  # as `open_engine` names it inside the data dir
STAGING_PREFIX: Final = ".backup-"
CHUNK: Final = 1 << 20  # bytes read (and hashed, and sent) at a time
BLOCK: Final = 512  # a tar block
MAX_MANIFEST_BYTES: Final = 64 * 1024
MAX_FILES: Final = 16
MAX_FILE_SIZE: Final = 1 << 50  # far above any LMDB map; only rejects nonsense
MAX_QUORUM: Final = 1024
MAX_TEXT: Final = 512  # characters of any string field of the manifest
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


# ----------------------------------------------------------------------------- manifest


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a backup: its path inside the backup (``lmdb/<name>``), size, hash."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a backup holds and where it came from (``manifest.json``)."""

    node_id: str
    n: int
    r: int
    w: int
    http: str
    rpc: str
    created_unix: float
    ringkv_version: str
    files: tuple[FileEntry, ...]

    @property
    def created_at(self) -> str:
        """The snapshot's time, UTC, ISO 8601."""
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_unix))

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_doc(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "node_id": self.node_id,
            "cluster": {"n": self.n, "r": self.r, "w": self.w},
            "addresses": {"http": self.http, "rpc": self.rpc},
            "created_at": self.created_at,
            "created_unix": self.created_unix,
            "ringkv_version": self.ringkv_version,
            "engine": "lmdb",
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256}
                      for f in self.files],
        }

    def to_json(self) -> bytes:
        return (json.dumps(self.to_doc(), indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        """Parse and check a manifest; ValueError naming the first thing wrong."""
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ValueError(f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"manifest is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError("manifest is not a JSON object")
        if doc.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} manifest (format {_shown(doc.get('format'))})")
        if doc.get("engine") != "lmdb":
            raise ValueError(f"unknown engine {_shown(doc.get('engine'))}")
        node_id = _text(doc, "node_id")
        if not valid_node_id(node_id):
            raise ValueError(f"manifest node_id {node_id!r} is not a valid node id")
        cluster = _object(doc, "cluster")
        n, r, w = (_int(cluster, k, 1, MAX_QUORUM) for k in ("n", "r", "w"))
        addresses = _object(doc, "addresses")
        created = doc.get("created_unix")
        if (not isinstance(created, int | float) or isinstance(created, bool)
                or not math.isfinite(created) or not 0 <= created < 1e11):
            raise ValueError("manifest created_unix must be a time in seconds")
        files = doc.get("files")
        if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
            raise ValueError(f"manifest files must be a list of 1 to {MAX_FILES} entries")
        entries = tuple(_entry(f) for f in files)
        paths = [e.path for e in entries]
        if len(set(paths)) != len(paths):
            raise ValueError("manifest lists a file twice")
        if f"{ENV_DIR}/data.mdb" not in paths:
            raise ValueError(f"manifest lists no {ENV_DIR}/data.mdb")
        return cls(node_id, n, r, w, _text(addresses, "http"), _text(addresses, "rpc"),
                   float(created), _text(doc, "ringkv_version"), entries)


def _shown(value: object) -> str:
    return repr(value)[:80]


def _object(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name)
    if not isinstance(value, dict):
        raise ValueError(f"manifest {name} must be an object")
    return value


def _text(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise ValueError(f"manifest {name} must be a string of 1 to {MAX_TEXT} characters")
    return value


def _int(doc: dict[str, Any], name: str, low: int, high: int) -> int:
    value = doc.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"manifest {name} must be an integer in {low}..{high}")
    return value


def _entry(doc: object) -> FileEntry:
    if not isinstance(doc, dict):
        raise ValueError("manifest file entries must be objects")
    path = _text(doc, "path")
    check_path(path)
    size = _int(doc, "size", 0, MAX_FILE_SIZE)
    digest = doc.get("sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise ValueError(f"manifest sha256 of {path} must be 64 lowercase hex digits")
    return FileEntry(path, size, digest)


def check_path(path: str) -> None:
    """A backup file's path is ``lmdb/<name>``, a plain name: nothing can escape."""
    head, sep, name = path.partition("/")
    if head != ENV_DIR or not sep or not _NAME.fullmatch(name):
        raise ValueError(f"unexpected file {path[:200]!r} in the backup"
                         f" (only {ENV_DIR}/<name> is allowed)")


def sha256_file(path: str, progress: Callable[[int], None] | None = None) -> tuple[int, str]:
    """(size, hex SHA-256) of a regular file, read in chunks; `progress(bytes)` per chunk."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        if not _is_regular(f.fileno()):
            raise ValueError(f"{path} is not a regular file")
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if progress is not None:
                progress(len(chunk))
    return size, digest.hexdigest()


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def tar_header(name: str, size: int, mtime: float) -> bytes:
    """The tar header block(s) of one regular file (PAX: any size, any name)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o600
    info.type = tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def _padding(size: int) -> int:
    return -size % BLOCK


# ------------------------------------------------------------------------------ endpoint


def _stage(data_path: str) -> str:
    """In a worker thread: a new staging directory in the data dir, after removing any
    left by a process that died while sending a backup (only one backup runs at a
    time, and only one process opens a data dir, so none is in use)."""
    for name in os.listdir(data_path):
        if name.startswith(STAGING_PREFIX):
            shutil.rmtree(os.path.join(data_path, name), ignore_errors=True)
    return tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=data_path)


def _snapshot(engine: LmdbEngine, staging: str) -> list[FileEntry]:
    """In a worker thread: copy the environment into ``staging/lmdb``, hash each file."""
    target = os.path.join(staging, ENV_DIR)
    entries = []
    for name in engine.copy_to(target):
        size, digest = sha256_file(os.path.join(target, name))
        entries.append(FileEntry(f"{ENV_DIR}/{name}", size, digest))
    return entries


class BackupEndpoint:
    """The handler of ``GET /admin/backup`` for one runtime (one backup at a time)."""

    __slots__ = ("_job", "_runtime")

    def __init__(self, runtime: NodeRuntime) -> None:
        self._runtime = runtime
        # The copy running now (a worker thread's future), None when none runs.
        self._job: asyncio.Future[list[FileEntry]] | None = None

    def _engine(self) -> LmdbEngine | None:
        from storage.lmdb_engine import LmdbEngine

        engine = self._runtime.engine
        return engine if isinstance(engine, LmdbEngine) else None

    async def get(self, request: web.Request) -> web.StreamResponse:
        engine = self._engine()
        config = self._runtime.config
        if engine is None:
            return error(409, "backups need the durable engine: this node runs on the"
                         f" {config.storage} engine (start it with --storage lmdb)",
                         storage=config.storage)
        if request.method == "HEAD":
            return web.Response(headers=self._headers(time.time()))
        if self._job is not None:
            return error(409, "a backup of this node is already running; try again when"
                         " it ends")
        loop = asyncio.get_running_loop()
        try:
            staging = await asyncio.to_thread(_stage, config.data_path)
        except OSError as exc:
            return error(507, f"no room to stage the copy: {exc.strerror or exc}")
        created = time.time()
        job = loop.run_in_executor(None, _snapshot, engine, staging)
        self._job = job
        try:
            try:
                entries = await asyncio.shield(job)
            except Exception as exc:
                return self._copy_failed(exc)
            return await self._send(request, staging, entries, created)
        finally:
            if job.done():
                self._finish(staging, job)
            else:  # the client went away: clean up once the thread is done with it
                job.add_done_callback(lambda done: self._finish(staging, done))

    def _finish(self, staging: str, job: asyncio.Future[list[FileEntry]]) -> None:
        if not job.cancelled():
            job.exception()  # retrieved here, whoever else did or did not
        shutil.rmtree(staging, ignore_errors=True)
        if self._job is job:
            self._job = None

    def _copy_failed(self, exc: Exception) -> web.Response:
        from storage.engine import EngineClosedError
        from storage.lmdb_engine import CopyRefusedError

        if isinstance(exc, CopyRefusedError):
            response = error(503, str(exc))
            response.headers["Retry-After"] = "1"
            return response
        if isinstance(exc, EngineClosedError):
            return error(503, "node is stopping")
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return error(507, "no room for the copy on the data directory's disk")
        log.error("backup copy failed", exc_info=exc)
        return error(500, f"the copy failed: {type(exc).__name__}")

    def _headers(self, created: float) -> dict[str, str]:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created))
        name = f"ringkv-{self._runtime.config.node_id}-{stamp}.tar"
        return {"Content-Type": "application/x-tar",
                "Content-Disposition": f'attachment; filename="{name}"',
                "Cache-Control": "no-store"}

    def _manifest(self, entries: list[FileEntry], created: float) -> Manifest:
        node, config = self._runtime.node, self._runtime.config
        return Manifest(node.id, node.n, node.r, node.w, config.http_address,
                        config.rpc_address, created, __version__, tuple(entries))

    async def _send(self, request: web.Request, staging: str, entries: list[FileEntry],
                    created: float) -> web.StreamResponse:
        manifest = self._manifest(entries, created)
        manifest_bytes = manifest.to_json()
        head = tar_header(MANIFEST_NAME, len(manifest_bytes), created)
        parts = [(tar_header(e.path, e.size, created), e) for e in entries]
        length = (len(head) + len(manifest_bytes) + _padding(len(manifest_bytes))
                  + sum(len(h) + e.size + _padding(e.size) for h, e in parts) + 2 * BLOCK)
        response = web.StreamResponse(headers=self._headers(created))
        response.content_length = length
        await response.prepare(request)
        try:
            await response.write(head + manifest_bytes
                                 + b"\0" * _padding(len(manifest_bytes)))
            for header, entry in parts:
                await response.write(header)
                await _send_file(response, os.path.join(staging, entry.path), entry.size)
                await response.write(b"\0" * _padding(entry.size))
            await response.write(b"\0" * (2 * BLOCK))  # the end-of-archive marker
            await response.write_eof()
        except ConnectionError:
            log.info("backup not sent: the client went away")
        return response


async def _send_file(response: web.StreamResponse, path: str, size: int) -> None:
    f = await asyncio.to_thread(open, path, "rb")
    try:
        sent = 0
        while sent < size:
            chunk = await asyncio.to_thread(f.read, min(CHUNK, size - sent))
            if not chunk:
                break
            await response.write(chunk)
            sent += len(chunk)
    finally:
        f.close()
    if sent != size:  # the body would not match its header: break the stream instead
        raise RuntimeError(f"{path} shrank from {size} to {sent} bytes while being sent")


# Where `register` leaves the endpoint on the app, for whoever needs its state (tests).
BACKUP_ENDPOINT: Final = web.AppKey("backup_endpoint", BackupEndpoint)


def register(app: web.Application, runtime: NodeRuntime,
             guard: Callable[[Handler], Handler]) -> BackupEndpoint:
    """Serve ``GET /admin/backup`` on `app`, behind `guard` (the admin check), and make
    the app's cleanup wait for a copy still running before the engine closes."""
    endpoint = BackupEndpoint(runtime)
    app[BACKUP_ENDPOINT] = endpoint
    app.router.add_get("/admin/backup", guard(endpoint.get))

    async def wait_for_copy(app: web.Application) -> None:
        job = endpoint._job
        if job is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait([job])
            await asyncio.sleep(0)  # let the job's done callback remove its staging

    app.on_cleanup.append(wait_for_copy)
    return endpoint
