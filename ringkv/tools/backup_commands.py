"""`ringkv backup` and `ringkv restore`: a node's hot backup, downloaded and put back.

    ringkv backup --node URL --out DIR [--admin-token T] [--ca FILE] [--cert FILE
                  [--key FILE]] [--token T] [--json]
    ringkv restore --from DIR --data-dir D [--force] [--json]

Job: `backup` downloads ``GET /admin/backup`` (`ringkv.server.backup`: a tar holding
``manifest.json`` then the node's LMDB environment under ``lmdb/``) and unpacks it into
DIR, checking every file against the manifest's size and SHA-256 as it arrives.
`backup` reaches an ``https://`` node as every client command does (the shared
`--ca`, `--cert`, `--key` and `--token` of `ringkv.tools.client_options`, made into a
TLS context by `ringkv.client.tls_context`), and sends the admin token, else the
client token (an admin-role token of a tokens file), as ``Authorization: Bearer``.
`restore` checks DIR again and installs the environment where a node started with
``--data-dir D`` opens it (``D/lmdb``, as `ringkv.server.runtime.open_engine` does);
``ringkv serve --node-id <the same id> --data-dir D`` then brings the node back with its
identity, its membership and its place in the ring.

Invariants:
- Everything from the network and from DIR is hostile: the tar must start with a
  manifest that `Manifest.from_json` accepts, every other member must be a regular file
  the manifest lists, with its size, no member twice; the stream may not run past what
  the manifest announces (bounded memory and disk); paths are only ``lmdb/<name>``.
- Nothing half-done is left behind: `backup` unpacks into a staging directory inside
  DIR and moves the files into place only once all of them matched; `restore` copies
  (hashing) into a staging directory inside D, opens the copy as the node will and
  checks it holds the manifest's node identity, and only then swaps it in. A refusal
  leaves DIR and D as they were (a directory either command created is removed).
- `restore` refuses a non-empty D unless ``--force``, which replaces ``D/lmdb`` only,
  and never while a process (a running node) has that environment open.

Progress (bytes downloaded, files checked) is a status line on stderr when it is a
terminal (`ringkv.tools.progress`; ``--progress`` / ``--no-progress`` override);
``--json`` prints a summary on stdout.
Both exit 0 on success and 4 on any refusal or error, with one line on stderr
(`ringkv.tools.exits`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import click

from ringkv.tools.client_options import admin_token_option, security, security_options
from ringkv.tools.exits import EXIT_ERROR, fail
from ringkv.tools.progress import StatusLine, progress_option, show_progress

if TYPE_CHECKING:
    from ringkv.server.backup import FileEntry, Manifest

__all__ = [
    "BackupError",
    "backup",
    "download_backup",
    "read_manifest",
    "restore",
    "restore_backup",
    "unpack_backup",
]

OnBytes = Callable[[int], None]
CHUNK = 1 << 20
# Bytes a tar may spend on headers and padding beyond its files' own bytes: per member
# a header (PAX: up to a few blocks) and padding, plus the end marker and a record of
# read-ahead.
_SLACK_PER_MEMBER = 16 * 512
_SLACK = 2 * 20 * 512
_ERROR_BODY_MAX = 64 * 1024


class BackupError(Exception):
    """A backup or restore refused (bad input, a refusal by the node, a busy target)."""


def _no_progress(n: int) -> None:
    pass


# ------------------------------------------------------------------------ reading a tar


class _ChunkReader:
    """A file object over an iterator of byte chunks, refusing to hand out more than
    `limit` bytes in all (it buffers at most one chunk beyond what is asked)."""

    def __init__(self, chunks: Iterable[bytes], limit: int, on_bytes: OnBytes) -> None:
        self._chunks = iter(chunks)
        self._buf = bytearray()
        self._eof = False
        self.limit = limit
        self.consumed = 0  # bytes handed out
        self._on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = self.limit + 1 - self.consumed  # "all": as much as may be had
        while len(self._buf) < size and not self._eof:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._eof = True
                break
            self._on_bytes(len(chunk))
            self._buf += chunk
        out = bytes(self._buf[:size])
        del self._buf[:size]
        self.consumed += len(out)
        if self.consumed > self.limit:
            raise BackupError("the backup is larger than its manifest announces")
        return out


def _copy_hashing(src: IO[bytes], dst_path: str, limit: int,
                  on_bytes: OnBytes) -> tuple[int, str]:
    """Copy at most `limit` + 1 bytes of `src` to a new file; (size, sha256); fsynced."""
    import hashlib

    digest = hashlib.sha256()
    size = 0
    with open(dst_path, "xb") as dst:
        while size <= limit:
            chunk = src.read(min(CHUNK, limit + 1 - size))
            if not chunk:
                break
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
            on_bytes(len(chunk))
        dst.flush()
        os.fsync(dst.fileno())
    return size, digest.hexdigest()


def _check_entry(entry: FileEntry, size: int, digest: str) -> None:
    if size != entry.size:
        raise BackupError(f"{entry.path}: {size} bytes where the manifest says {entry.size}")
    if digest != entry.sha256:
        raise BackupError(f"{entry.path}: SHA-256 {digest} does not match the manifest's"
                          f" {entry.sha256}: the file is corrupted")


def unpack_backup(chunks: Iterable[bytes], out_dir: str,
                  on_bytes: OnBytes = _no_progress) -> Manifest:
    """Unpack a backup tar (as chunks) into `out_dir`, checking it; its manifest.

    `out_dir` must be empty or absent. On any refusal (`BackupError`) nothing of the
    backup is left in `out_dir`.
    """
    created = _prepare_empty_dir(out_dir, "output directory")
    staging = tempfile.mkdtemp(prefix=".incoming-", dir=out_dir)
    try:
        manifest = _unpack_into(chunks, staging, on_bytes)
        for name in sorted(os.listdir(staging)):
            os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
        os.rmdir(staging)
        _fsync_dir(out_dir)
        return manifest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(out_dir)
        raise


def _unpack_into(chunks: Iterable[bytes], staging: str, on_bytes: OnBytes) -> Manifest:
    from ringkv.server.backup import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest

    reader = _ChunkReader(chunks, MAX_MANIFEST_BYTES + _SLACK, on_bytes)
    manifest: Manifest | None = None
    wanted: dict[str, FileEntry] = {}
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                if not member.isreg():
                    raise BackupError(f"the backup holds {member.name[:200]!r}, not a file")
                src = tar.extractfile(member)
                assert src is not None  # a regular file always has one
                if manifest is None:
                    if member.name != MANIFEST_NAME:
                        raise BackupError("the backup does not start with its manifest")
                    if member.size > MAX_MANIFEST_BYTES:
                        raise BackupError("the backup's manifest is too large")
                    raw = src.read(member.size)
                    manifest = Manifest.from_json(raw)
                    wanted = {e.path: e for e in manifest.files}
                    reader.limit = (reader.consumed + manifest.total_bytes + _SLACK
                                    + _SLACK_PER_MEMBER * len(manifest.files))
                    _write_new(os.path.join(staging, MANIFEST_NAME), raw)
                    continue
                entry = wanted.pop(member.name, None)
                if entry is None:
                    raise BackupError(f"the backup holds {member.name[:200]!r}, which its"
                                      " manifest does not list (or lists once)")
                if member.size != entry.size:
                    raise BackupError(f"{entry.path}: {member.size} bytes in the tar where"
                                      f" the manifest says {entry.size}")
                path = os.path.join(staging, *entry.path.split("/"))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                size, digest = _copy_hashing(src, path, entry.size, _no_progress)
                _check_entry(entry, size, digest)
    except (tarfile.TarError, EOFError) as exc:
        raise BackupError(f"the backup is not a complete tar: {exc}") from None
    except ValueError as exc:  # the manifest's own checks
        raise BackupError(str(exc)) from None
    if manifest is None:
        raise BackupError("the backup is empty: no manifest")
    if wanted:
        raise BackupError("the backup ended before " + ", ".join(sorted(wanted)))
    return manifest


def _write_new(path: str, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _prepare_empty_dir(path: str, what: str) -> bool:
    """Refuse an existing non-empty `path`; create it if absent; True if created."""
    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise BackupError(f"{what} {path} exists and is not a directory")
        if os.listdir(path):
            raise BackupError(f"{what} {path} is not empty")
        return False
    os.makedirs(path)
    return True


# ---------------------------------------------------------------------------- download


def download_backup(url: str, out_dir: str, admin_token: str | None = None,
                    timeout: float = 600.0,
                    on_start: Callable[[int | None], None] | None = None,
                    on_bytes: OnBytes = _no_progress, *, token: str | None = None,
                    verify: ssl.SSLContext | None = None) -> Manifest:
    """Download the backup of the node at `url` into `out_dir`, checked; its manifest.

    `admin_token`, else `token` (a client token of the admin role), is sent as
    ``Authorization: Bearer``; an ``https://`` node is verified with `verify` (from
    `ringkv.client.tls_context`: the cluster CA, and a client certificate for a node
    with ``--http-tls mutual``), else against the system's roots.
    """
    import httpx

    from ringkv.client.transport import describe_failure

    bearer = admin_token or token
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    limits = httpx.Timeout(connect=10.0, read=timeout, write=30.0, pool=10.0)
    target = f"{url.rstrip('/')}/admin/backup"
    answered = False
    try:
        with httpx.Client(timeout=limits, follow_redirects=False,
                          verify=True if verify is None else verify) as http, \
                http.stream("GET", target, headers=headers) as resp:
            answered = True
            if resp.status_code != 200:
                raise BackupError(_refusal(url, resp))
            if on_start is not None:
                on_start(_content_length(resp.headers.get("Content-Length")))
            return unpack_backup(resp.iter_bytes(CHUNK), out_dir, on_bytes)
    except httpx.HTTPError as exc:
        if answered:  # the node answered, then the stream broke off
            raise BackupError(f"backup of {url} failed: {type(exc).__name__}: {exc}"
                              ) from None
        # Not connected at all: say why as the client does (a CA to give, a client
        # certificate the node asks for, http:// and https:// mixed up).
        raise BackupError(f"backup failed: {describe_failure(url, exc)}") from None


def _content_length(text: str | None) -> int | None:
    if text is None or not text.isdigit() or len(text) > 18:
        return None
    return int(text)


def _refusal(url: str, resp: Any) -> str:
    """One line for a node's refusal; its JSON error read within a bound."""
    body = b""
    for chunk in resp.iter_bytes():
        body += chunk
        if len(body) > _ERROR_BODY_MAX:
            break
    message = ""
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        doc = json.loads(body[:_ERROR_BODY_MAX].decode())
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            message = doc["error"][:500]
    status = resp.status_code
    if status == 401:
        return (f"{url} requires an admin token: give --admin-token or set"
                f" RINGKV_ADMIN_TOKEN (401: {message})")
    if status == 403:
        return (f"{url} refused the admin request (403: {message}); check --admin-token"
                " / RINGKV_ADMIN_TOKEN, or run the command on the node's own host")
    if status == 404:
        return f"{url} serves no /admin/backup (404): is it a ringkv node of this version?"
    return f"{url} refused the backup ({status}: {message or 'no reason given'})"


# ----------------------------------------------------------------------- check, restore


def read_manifest(src: str) -> Manifest:
    """The manifest of the unpacked backup in directory `src` (checked, not the files)."""
    from ringkv.server.backup import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest

    path = os.path.join(src, MANIFEST_NAME)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise BackupError(f"{src} holds no readable {MANIFEST_NAME}: {exc.strerror}"
                          ) from None
    try:
        return Manifest.from_json(raw)
    except ValueError as exc:
        raise BackupError(f"{path}: {exc}") from None


def _entry_source(src: str, entry: FileEntry) -> str:
    path = os.path.join(src, *entry.path.split("/"))
    if os.path.islink(path) or not os.path.isfile(path):
        raise BackupError(f"{entry.path} is missing from {src} (or not a regular file)")
    return path


@dataclass(frozen=True, slots=True)
class Restored:
    """What `restore_backup` installed, and what the environment holds."""

    manifest: Manifest
    target: str  # D/lmdb
    replaced: bool  # an environment was there before (--force)
    records: int  # entries of the data table
    members: int  # members the node knew
    tokens: int  # its own tokens: its place in the ring


def restore_backup(src: str, data_dir: str, force: bool = False,
                   on_file: Callable[[str], None] | None = None,
                   on_bytes: OnBytes = _no_progress) -> Restored:
    """Install the unpacked backup in `src` as the environment of ``data_dir``."""
    from ringkv.server.backup import ENV_DIR

    manifest = read_manifest(src)
    target = os.path.join(data_dir, ENV_DIR)
    if os.path.isdir(data_dir) and os.listdir(data_dir):
        if not force:
            raise BackupError(f"data dir {data_dir} is not empty; restore into an empty"
                              f" one, or give --force to replace {target}")
        _refuse_if_open(target)
    created = _prepare_dir(data_dir)
    staging = tempfile.mkdtemp(prefix=".restore-", dir=data_dir)
    try:
        for entry in manifest.files:
            if on_file is not None:
                on_file(entry.path)
            dst = os.path.join(staging, *entry.path.split("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(_entry_source(src, entry), "rb") as f:
                size, digest = _copy_hashing(f, dst, entry.size, on_bytes)
            _check_entry(entry, size, digest)
        fresh = os.path.join(staging, ENV_DIR)
        records, members, tokens = _check_environment(fresh, manifest.node_id)
        replaced = _swap_in(fresh, target, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    _fsync_dir(data_dir)
    return Restored(manifest, target, replaced, records, members, tokens)


def _prepare_dir(path: str) -> bool:
    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise BackupError(f"data dir {path} exists and is not a directory")
        return False
    os.makedirs(path)
    return True


def _swap_in(fresh: str, target: str, staging: str) -> bool:
    """Move `fresh` to `target`, the old environment (if any) into `staging`."""
    if not os.path.lexists(target):
        os.replace(fresh, target)
        return False
    old = os.path.join(staging, "replaced")
    os.replace(target, old)
    try:
        os.replace(fresh, target)
    except OSError:
        os.replace(old, target)
        raise
    return True


def _refuse_if_open(target: str) -> None:
    """Refuse while a process has the LMDB environment at `target` open.

    Every process that opens an environment holds a POSIX lock on the first byte of
    its ``lock.mdb`` for as long as it keeps it open; an exclusive lock that cannot be
    taken means some process (a running node) holds one.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: nothing to ask
        return
    lock = os.path.join(target, "lock.mdb")
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return  # no lock file: nothing has it open
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
    except OSError:
        raise BackupError(f"a process has {target} open: stop the node before"
                          " restoring over its data") from None
    finally:
        os.close(fd)  # releases the lock, if it was taken


def _check_environment(path: str, node_id: str) -> tuple[int, int, int]:
    """Open the restored environment as the node will; (records, members, own tokens).

    Refuses one that does not open, or whose identity is not `node_id`'s.
    """
    import lmdb
    import msgpack

    from storage.lmdb_engine import LmdbEngine

    try:
        engine = LmdbEngine(path)
    except (lmdb.Error, ValueError) as exc:
        raise BackupError(f"the restored environment does not open: {exc}") from None
    try:
        def meta(name: str) -> object:
            raw = engine.get("meta", name.encode())
            try:
                return None if raw is None else msgpack.unpackb(raw, raw=False)
            except Exception:  # msgpack raises several unrelated types on garbage
                return None

        ident = meta("identity")
        if not isinstance(ident, dict) or ident.get("node_id") != node_id:
            found = ident.get("node_id") if isinstance(ident, dict) else None
            raise BackupError(f"the backup's environment holds the identity of"
                              f" {found!r}, not of {node_id!r} as its manifest says")
        records = engine.count("data")
        saved = meta("members")
        members = saved if isinstance(saved, list) else []
        tokens = 0
        for doc in members:
            if isinstance(doc, list) and doc and doc[0] == node_id and len(doc) > 3:
                tokens = len(doc[3]) if isinstance(doc[3], list) else 0
        return records, len(members), tokens
    finally:
        engine.close()


# ---------------------------------------------------------------------------- progress


class _Meter:
    """Bytes (and the file being checked) on a command's progress line."""

    __slots__ = ("_done", "_label", "_line", "_total")

    def __init__(self, line: StatusLine, label: str, total: int | None = None) -> None:
        self._line, self._label, self._total = line, label, total
        self._done = 0

    def start(self, total: int | None) -> None:
        self._total = total
        self._show()

    def advance(self, n: int) -> None:
        self._done += n
        self._show()

    def describe(self, text: str) -> None:
        self._label = text
        self._show()

    def _show(self) -> None:
        if not self._line.enabled:
            return
        text = f"{self._label}: {_mib(self._done)}"
        if self._total:
            text += f" of {_mib(self._total)} ({min(100, 100 * self._done // self._total)}%)"
        self._line.update(text)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _files(manifest: Manifest) -> list[dict[str, object]]:
    return [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in manifest.files]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# ---------------------------------------------------------------------------- commands


def _node_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from ringkv.client import normalize_base_url

    if "," in value:
        raise click.BadParameter("give one node: a backup is of one node's data")
    try:
        return normalize_base_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("backup")
@click.option("--node", required=True, metavar="URL", callback=_node_url,
              help="The node to back up (its HTTP address).")
@click.option("--out", "out_dir", required=True, metavar="DIR",
              type=click.Path(file_okay=False),
              help="Directory to unpack the backup into (created; must be empty).")
@admin_token_option
@security_options
@click.option("--timeout", type=click.FloatRange(min=1.0), default=600.0, show_default=True,
              metavar="SECONDS", help="How long to wait for the node's next bytes (the copy"
              " is made before the first).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@progress_option
def backup(node: str, out_dir: str, admin_token: str | None, timeout: float, as_json: bool,
           progress: bool | None) -> None:
    """Take a hot backup of the node at --node into DIR (its data, identity and ring)."""
    from ringkv.client import tls_context

    given = security()
    try:
        verify = tls_context(given.get("ca"), given.get("cert"), given.get("key"))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    began = time.monotonic()
    downloaded = 0
    try:
        with StatusLine(show_progress(progress)) as line:
            meter = _Meter(line, f"backing up {node}")

            def count(n: int) -> None:
                nonlocal downloaded
                downloaded += n
                meter.advance(n)

            manifest = download_backup(node, out_dir, admin_token, timeout,
                                       on_start=meter.start, on_bytes=count,
                                       token=given.get("token"), verify=verify)
    except (BackupError, OSError) as exc:
        fail(str(exc), EXIT_ERROR)
    seconds = time.monotonic() - began
    if as_json:
        doc = {**manifest.to_doc(), "out": os.path.abspath(out_dir), "bytes":
               manifest.total_bytes, "downloaded_bytes": downloaded,
               "seconds": round(seconds, 3), "verified": True}
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"backed up {manifest.node_id} ({_plural(len(manifest.files), 'file')},"
               f" {_mib(manifest.total_bytes)}, SHA-256 checked) into {out_dir}"
               f" in {seconds:.1f} s; snapshot taken {manifest.created_at}")


@click.command("restore")
@click.option("--from", "src", required=True, metavar="DIR",
              type=click.Path(exists=True, file_okay=False),
              help="An unpacked backup (the --out of ringkv backup).")
@click.option("--data-dir", required=True, metavar="D", type=click.Path(file_okay=False),
              help="The data dir the node will be started with (--data-dir).")
@click.option("--force", is_flag=True,
              help="Replace the environment of a non-empty data dir (the node stopped).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@progress_option
def restore(src: str, data_dir: str, force: bool, as_json: bool,
            progress: bool | None) -> None:
    """Check the backup in DIR and install it as the data of a node run with --data-dir D."""
    began = time.monotonic()
    try:
        manifest = read_manifest(src)
        checked = 0
        with StatusLine(show_progress(progress)) as line:
            meter = _Meter(line, "checking", manifest.total_bytes)

            def on_file(path: str) -> None:
                nonlocal checked
                checked += 1
                meter.describe(f"checking {path} ({checked}/{len(manifest.files)} files)")

            done = restore_backup(src, data_dir, force, on_file, meter.advance)
    except (BackupError, OSError) as exc:
        fail(str(exc), EXIT_ERROR)
    seconds = time.monotonic() - began
    serve = f"ringkv serve --node-id {done.manifest.node_id} --data-dir {data_dir}"
    if as_json:
        click.echo(json.dumps({
            "node_id": done.manifest.node_id, "data_dir": os.path.abspath(data_dir),
            "lmdb": os.path.abspath(done.target), "replaced": done.replaced,
            "files": _files(done.manifest), "bytes": done.manifest.total_bytes,
            "verified": True, "records": done.records, "members": done.members,
            "tokens": done.tokens, "created_at": done.manifest.created_at,
            "seconds": round(seconds, 3), "serve": serve}, indent=2))
        return
    click.echo(f"restored {done.manifest.node_id} into {done.target}"
               f" ({_plural(len(done.manifest.files), 'file')},"
               f" {_mib(done.manifest.total_bytes)}, SHA-256 checked;"
               f" {_plural(done.records, 'record')}, {_plural(done.members, 'member')},"
               f" {_plural(done.tokens, 'token')}) from the snapshot of"
               f" {done.manifest.created_at}")
    click.echo(f"start it with: {serve} (and its usual options)")
