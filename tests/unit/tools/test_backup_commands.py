"""Hot backup and restore of one node: `GET /admin/backup`, `ringkv backup`, `ringkv restore`.

In-process nodes (a real `NodeRuntime` on loopback, LMDB in a temporary directory, the
route added with `ringkv.server.backup.register`) are backed up over HTTP and restored
into a fresh data dir, which a new node then serves with the same identity and data.
The tar and manifest checks are driven with hand-made (hostile) tars and directories:
a corrupted file, a foreign member, a path that climbs out, a truncated or overlong
stream, a non-empty or in-use data dir are all refused, and leave nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import msgpack
import pytest
from click.testing import CliRunner

from ringkv import __version__
from ringkv.core.config import fast_test_config
from ringkv.server.backup import BACKUP_ENDPOINT, FORMAT, FileEntry, Manifest
from ringkv.server.http_api import make_app
from ringkv.server.runtime import STOP_GRACE, NodeRuntime
from ringkv.tools.backup_commands import (
    BackupError,
    backup,
    download_backup,
    restore,
    restore_backup,
    unpack_backup,
)
from storage.lmdb_engine import CopyRefusedError, LmdbEngine
from tests.support.procs import HOST, free_ports

TOKEN = "backup-token"


# ------------------------------------------------------------------------------ helpers


@contextlib.asynccontextmanager
async def node(data_dir: Path, node_id: str = "n1", **overrides: Any
               ) -> AsyncIterator[NodeRuntime]:
    """One node (N=R=W=1: a whole cluster) serving the API and /admin/backup."""
    http_port, rpc_port = free_ports(2)
    settings: dict[str, Any] = {"n": 1, "r": 1, "w": 1, "http_port": http_port,
                                "rpc_port": rpc_port, "host": HOST, "storage": "lmdb",
                                "sync": "group", "data_dir": str(data_dir)}
    settings.update(overrides)
    runtime = NodeRuntime(fast_test_config(node_id, **settings))
    app = make_app(runtime)  # registers /admin/backup
    runtime.backup_endpoint = app[BACKUP_ENDPOINT]  # type: ignore[attr-defined]
    await runtime.start(app)
    try:
        yield runtime
    finally:
        await runtime.stop()


def url(runtime: NodeRuntime) -> str:
    return f"http://{HOST}:{runtime.config.http_port}"


async def put_keys(runtime: NodeRuntime, keys: range) -> None:
    async with httpx.AsyncClient(base_url=url(runtime), timeout=10) as http:
        for i in keys:
            resp = await http.put(f"/kv/k{i}", content=f"v{i}".encode())
            assert resp.status_code == 204, resp.text


def identity(env: Path) -> dict[str, Any]:
    engine = LmdbEngine(str(env))
    try:
        raw = engine.get("meta", b"identity")
        assert raw is not None
        doc: dict[str, Any] = msgpack.unpackb(raw, raw=False)
        return doc
    finally:
        engine.close()


def make_backup_dir(tmp: Path, node_id: str = "n1", records: int = 5,
                    manifest_id: str | None = None) -> Path:
    """An unpacked backup made without a node: an environment holding an identity,
    membership and a few records, copied with `copy_to`, and its manifest."""
    src = LmdbEngine(str(tmp / "source-env"), sync=False)
    src.put("meta", b"identity", msgpack.packb({"node_id": node_id, "starts": 1,
                                                "key": b"k" * 32}, use_bin_type=True))
    src.put("meta", b"members", msgpack.packb([[node_id, "h:1", "h:2", [1, 2, 3], "up",
                                                 1, 1, b"", "", b""]], use_bin_type=True))
    for i in range(records):
        src.put("data", b"key%d" % i, b"value")
    src.commit(src.seal())
    out = tmp / "backup"
    src.copy_to(str(out / "lmdb"))
    src.close()
    data = out / "lmdb" / "data.mdb"
    entry = FileEntry("lmdb/data.mdb", data.stat().st_size,
                      hashlib.sha256(data.read_bytes()).hexdigest())
    manifest = Manifest(manifest_id or node_id, 3, 2, 2, "http://h:1", "h:2", time.time(),
                        __version__, (entry,))
    (out / "manifest.json").write_bytes(manifest.to_json())
    return out


def tar_bytes(members: list[tuple[str, bytes]], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink is not None:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return buf.getvalue()


def manifest_for(files: dict[str, bytes], node_id: str = "n1") -> bytes:
    entries = tuple(FileEntry(p, len(d), hashlib.sha256(d).hexdigest())
                    for p, d in files.items())
    return Manifest(node_id, 3, 2, 2, "http://h:1", "h:2", 1.0, "0", entries).to_json()


def chunks(data: bytes, size: int = 700) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def cli(*args: str) -> Any:
    """The commands as `ringkv` runs them, in a group of their own (not `ringkv.tools.cli`:
    its registration is that module's business)."""
    group = click.Group("ringkv", commands=[backup, restore])
    return CliRunner().invoke(group, list(args), catch_exceptions=False)


# ---------------------------------------------------------------- through a live node


def test_backup_restore_round_trip_keeps_data_identity_and_ring(tmp_path: Path) -> None:
    out, restored = tmp_path / "backup", tmp_path / "restored"

    (tmp_path / "d1" / ".backup-left-by-a-crash").mkdir(parents=True)

    async def first() -> dict[str, Any]:
        async with node(tmp_path / "d1", admin_token=TOKEN) as rt:
            await put_keys(rt, range(300))
            manifest = await asyncio.to_thread(download_backup, url(rt), str(out), TOKEN)
            view = rt.node.members.get("n1")
            assert view is not None
            return {"manifest": manifest, "tokens": view.tokens, "http": url(rt)}

    got = asyncio.run(first())
    manifest: Manifest = got["manifest"]
    assert (manifest.node_id, manifest.n, manifest.r, manifest.w) == ("n1", 1, 1, 1)
    assert manifest.http == got["http"] and manifest.ringkv_version == __version__
    assert abs(manifest.created_unix - time.time()) < 60
    assert sorted(os.listdir(out)) == ["lmdb", "manifest.json"]
    assert os.listdir(out / "lmdb") == ["data.mdb"]
    data = (out / "lmdb" / "data.mdb").read_bytes()
    assert [(f.path, f.size, f.sha256) for f in manifest.files] == [
        ("lmdb/data.mdb", len(data), hashlib.sha256(data).hexdigest())]
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["format"] == FORMAT and doc["cluster"] == {"n": 1, "r": 1, "w": 1}
    assert doc["addresses"]["rpc"].startswith(HOST) and doc["created_at"].endswith("Z")
    # No staging copy is left in the node's data dir once the backup is sent (nor
    # one a process that died while sending a backup left there).
    assert not [p for p in os.listdir(tmp_path / "d1") if p.startswith(".backup-")]

    result = cli("restore", "--from", str(out), "--data-dir", str(restored), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["node_id"] == "n1" and summary["verified"] is True
    assert summary["records"] >= 300 and summary["tokens"] == len(got["tokens"])
    assert summary["serve"] == f"ringkv serve --node-id n1 --data-dir {restored}"
    assert identity(restored / "lmdb")["key"] == identity(tmp_path / "d1" / "lmdb")["key"]

    async def second() -> None:
        async with node(restored) as rt:  # other ports, the same id and data dir
            me = rt.node.members.get("n1")
            assert me is not None and me.tokens == got["tokens"]
            async with httpx.AsyncClient(base_url=url(rt), timeout=10) as http:
                for i in range(300):
                    resp = await http.get(f"/kv/k{i}")
                    assert resp.status_code == 200 and resp.content == f"v{i}".encode()

    asyncio.run(second())


def test_a_hot_backup_holds_every_write_acknowledged_before_it(tmp_path: Path) -> None:
    out = tmp_path / "backup"

    async def go() -> set[int]:
        async with node(tmp_path / "d1") as rt:
            acked: list[int] = []
            stop = asyncio.Event()

            async def writer() -> None:
                async with httpx.AsyncClient(base_url=url(rt), timeout=10) as http:
                    i = 0
                    while not stop.is_set():
                        resp = await http.put(f"/kv/w{i}", content=b"x" * 2000)
                        assert resp.status_code == 204
                        acked.append(i)
                        i += 1

            task = asyncio.create_task(writer())
            while len(acked) < 200:
                await asyncio.sleep(0.01)
            before = set(acked)
            await asyncio.to_thread(download_backup, url(rt), str(out))
            stop.set()
            await task
            assert len(acked) > len(before)  # the node kept acknowledging meanwhile
            return before

    before = asyncio.run(go())
    restored = restore_backup(str(out), str(tmp_path / "r"))
    engine = LmdbEngine(restored.target)
    try:
        keys = {bytes(k) for k, _ in engine.scan("data", b"", None)}
    finally:
        engine.close()
    found = {i for i in before if any(k.endswith(b"w%d" % i) for k in keys)}
    assert found == before


def test_memory_node_answers_409_and_the_command_says_why(tmp_path: Path) -> None:
    out = tmp_path / "out"

    async def go() -> tuple[int, Any, Any]:
        async with node(tmp_path / "d", storage="memory", sync="none") as rt:
            async with httpx.AsyncClient(base_url=url(rt)) as http:
                resp = await http.get("/admin/backup")
            result = await asyncio.to_thread(cli, "backup", "--node", url(rt),
                                             "--out", str(out))
            return resp.status_code, resp.json(), result

    status, doc, result = asyncio.run(go())
    assert status == 409 and "durable engine" in doc["error"]
    assert result.exit_code == 4 and "durable engine" in result.stderr
    assert not out.exists()


def test_backup_needs_the_admin_token(tmp_path: Path) -> None:
    async def go() -> tuple[Any, Any]:
        async with node(tmp_path / "d", admin_token=TOKEN) as rt:
            none = await asyncio.to_thread(cli, "backup", "--node", url(rt), "--out",
                                           str(tmp_path / "a"))
            wrong = await asyncio.to_thread(cli, "backup", "--node", url(rt), "--out",
                                            str(tmp_path / "b"), "--admin-token", "nope")
            return none, wrong

    none, wrong = asyncio.run(go())
    assert none.exit_code == 4 and "requires an admin token" in none.stderr
    assert wrong.exit_code == 4 and "403" in wrong.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_head_copies_nothing_and_a_second_backup_waits_its_turn(tmp_path: Path) -> None:
    async def go() -> None:
        async with node(tmp_path / "d") as rt, httpx.AsyncClient(base_url=url(rt)) as http:
            head = await http.head("/admin/backup")
            assert head.status_code == 200
            assert head.headers["Content-Type"] == "application/x-tar"
            assert not [p for p in os.listdir(tmp_path / "d") if p != "lmdb"]
            endpoint = rt.backup_endpoint  # type: ignore[attr-defined]
            endpoint._job = asyncio.get_running_loop().create_future()  # one running
            busy = await http.get("/admin/backup")
            endpoint._job = None
            assert busy.status_code == 409 and "already running" in busy.json()["error"]

    asyncio.run(go())


def test_a_stopping_node_waits_for_a_running_copy_before_closing(tmp_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    async def go() -> None:
        async with node(tmp_path / "d") as rt:
            engine = rt.engine
            assert isinstance(engine, LmdbEngine)
            real = engine.copy_to

            def slow_copy(path: str) -> list[str]:
                entered.set()
                release.wait(10)
                return real(path)

            engine.copy_to = slow_copy  # type: ignore[method-assign]
            client = httpx.AsyncClient(base_url=url(rt), timeout=10)
            request = asyncio.create_task(client.get("/admin/backup"))
            await asyncio.to_thread(entered.wait, 10)
            stopping = asyncio.create_task(rt.stop())
            # Past aiohttp's two waits for handlers (STOP_GRACE each: to finish, then
            # once cancelled): the request is gone, the app's cleanup hook still waits.
            await asyncio.sleep(2 * STOP_GRACE + 0.8)
            assert not stopping.done() and not engine._closed
            release.set()
            await stopping
            assert engine._closed
            with contextlib.suppress(httpx.HTTPError):
                await request
            await client.aclose()
        assert os.listdir(tmp_path / "d") == ["lmdb"]  # the staged copy is gone too

    asyncio.run(go())


# ------------------------------------------------------------------- the engine's copy


def test_copy_to_is_the_committed_state_only(tmp_path: Path) -> None:
    engine = LmdbEngine(str(tmp_path / "env"), sync=False)
    engine.put("data", b"committed", b"1")
    engine.commit(engine.seal())
    engine.put("data", b"staged", b"2")  # staged: not acknowledged, not in a copy
    assert engine.copy_to(str(tmp_path / "copy")) == ["data.mdb"]
    with pytest.raises(FileExistsError):
        engine.copy_to(str(tmp_path / "copy"))
    engine.close()
    copy = LmdbEngine(str(tmp_path / "copy"))
    assert copy.get("data", b"committed") == b"1" and copy.get("data", b"staged") is None
    copy.close()


def test_a_copy_and_a_remap_never_run_together(tmp_path: Path) -> None:
    engine = LmdbEngine(str(tmp_path / "env"), sync=False, map_size=1 << 24,
                        initial_map_size=1 << 20)
    # The two flags each side raises before looking at the other (module docstring).
    engine._copies.add(object())
    assert engine.grow() is False  # a copy reads the map: it must not move
    engine._copies.clear()
    engine._remapping = True
    with pytest.raises(CopyRefusedError):
        engine.copy_to(str(tmp_path / "copy"))
    assert not engine._copies
    engine._remapping = False
    assert engine.grow() is True
    engine.close()


# ---------------------------------------------------------------------- unpacking a tar


def test_unpack_accepts_a_good_tar(tmp_path: Path) -> None:
    files = {"lmdb/data.mdb": os.urandom(5000)}
    raw = tar_bytes([("manifest.json", manifest_for(files)), *files.items()])
    manifest = unpack_backup(chunks(raw), str(tmp_path / "out"))
    assert manifest.node_id == "n1"
    assert (tmp_path / "out" / "lmdb" / "data.mdb").read_bytes() == files["lmdb/data.mdb"]
    assert sorted(os.listdir(tmp_path / "out")) == ["lmdb", "manifest.json"]


GOOD = os.urandom(3000)


@pytest.mark.parametrize(("members", "match"), [
    ([("lmdb/data.mdb", GOOD), ("manifest.json", manifest_for({"lmdb/data.mdb": GOOD}))],
     "does not start with its manifest"),
    ([("manifest.json", manifest_for({"lmdb/data.mdb": GOOD})),
      ("lmdb/data.mdb", GOOD[:-1] + bytes([GOOD[-1] ^ 1]))], "corrupted"),
    ([("manifest.json", manifest_for({"lmdb/data.mdb": GOOD})), ("lmdb/data.mdb", GOOD),
      ("lmdb/other", b"x")], "does not list"),
    ([("manifest.json", manifest_for({"lmdb/data.mdb": GOOD})), ("lmdb/data.mdb", GOOD),
      ("lmdb/data.mdb", GOOD)], "does not list"),
    ([("manifest.json", manifest_for({"lmdb/data.mdb": GOOD}))], "ended before"),
    ([("manifest.json", manifest_for({"lmdb/data.mdb": GOOD})),
      ("lmdb/data.mdb", GOOD[:100])], "100 bytes in the tar"),
    ([("manifest.json", b"{not json")], "not JSON"),
    ([("manifest.json", manifest_for({"lmdb/data.mdb": GOOD}).replace(
        b'"lmdb/data.mdb"', b'"../../data.mdb"'))], "only lmdb/<name>"),
    ([], "empty"),
])
def test_unpack_refuses_a_bad_tar_and_leaves_nothing(
        tmp_path: Path, members: list[tuple[str, bytes]], match: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(BackupError, match=match):
        unpack_backup(chunks(tar_bytes(members)), str(out))
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == []


def test_unpack_refuses_links_truncation_and_overlong_streams(tmp_path: Path) -> None:
    manifest = manifest_for({"lmdb/data.mdb": GOOD})
    link = tar_bytes([("manifest.json", manifest)], symlink="lmdb/data.mdb")
    with pytest.raises(BackupError, match="not a file"):
        unpack_backup(chunks(link), str(tmp_path / "a"))
    whole = tar_bytes([("manifest.json", manifest), ("lmdb/data.mdb", GOOD)])
    with pytest.raises(BackupError):
        unpack_backup(chunks(whole[:2500]), str(tmp_path / "b"))  # cut inside the file
    # A member larger than its manifest entry is refused by its header alone...
    small = manifest_for({"lmdb/data.mdb": b"0123456789"})
    big = tar_bytes([("manifest.json", small), ("lmdb/data.mdb", b"y" * (1 << 20))])
    with pytest.raises(BackupError, match="bytes in the tar where the manifest says 10"):
        unpack_backup(chunks(big, 65536), str(tmp_path / "c"))
    # ...and headers tarfile would read whole into memory (PAX records) are bounded:
    # before the manifest, and after it by what the manifest announces.
    for where in (0, 1):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for i, (name, data) in enumerate([("manifest.json", small),
                                              ("lmdb/data.mdb", b"0123456789")]):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                if i == where:
                    info.pax_headers = {"comment": "z" * (4 << 20)}
                tar.addfile(info, io.BytesIO(data))
        with pytest.raises(BackupError, match="larger than its manifest"):
            unpack_backup(chunks(buf.getvalue(), 65536), str(tmp_path / "c"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep").write_text("mine")
    with pytest.raises(BackupError, match="not empty"):
        unpack_backup(chunks(whole), str(tmp_path / "d"))
    assert os.listdir(tmp_path / "d") == ["keep"]
    assert sorted(os.listdir(tmp_path)) == ["d"]


@pytest.mark.parametrize(("change", "match"), [
    ({"format": "other/1"}, "not a ringkv-backup/1"),
    ({"engine": "memory"}, "unknown engine"),
    ({"node_id": "bad id!"}, "not a valid node id"),
    ({"cluster": {"n": 0, "r": 1, "w": 1}}, "n must be an integer"),
    ({"cluster": {"n": True, "r": 1, "w": 1}}, "n must be an integer"),
    ({"created_unix": "yesterday"}, "created_unix"),
    ({"files": []}, "1 to 16 entries"),
    ({"files": [{"path": "lmdb/data.mdb", "size": 1, "sha256": "AB" * 32}]}, "hex"),
    ({"files": [{"path": "lmdb/lock.mdb", "size": 1, "sha256": "ab" * 32}]},
     "no lmdb/data.mdb"),
    ({"files": [{"path": "lmdb/data.mdb", "size": 1, "sha256": "ab" * 32}] * 2}, "twice"),
    ({"files": [{"path": "/etc/passwd", "size": 1, "sha256": "ab" * 32}]}, "only lmdb"),
    ({"files": [{"path": "lmdb/..", "size": 1, "sha256": "ab" * 32}]}, "only lmdb"),
    ({"files": [{"path": "lmdb/data.mdb", "size": -1, "sha256": "ab" * 32}]}, "size"),
    ({"addresses": {"http": "x" * 600, "rpc": "y"}}, "http must be a string"),
])
def test_manifest_checks_every_field(change: dict[str, Any], match: str) -> None:
    doc = json.loads(manifest_for({"lmdb/data.mdb": b"x"}))
    Manifest.from_json(json.dumps(doc).encode())  # the unchanged one is fine
    doc.update(change)
    with pytest.raises(ValueError, match=match):
        Manifest.from_json(json.dumps(doc).encode())
    with pytest.raises(ValueError, match="larger than"):
        Manifest.from_json(b" " * 70_000)


# ----------------------------------------------------------------------------- restore


def test_restore_refuses_a_corrupted_file_and_leaves_the_data_dir_alone(
        tmp_path: Path) -> None:
    src = make_backup_dir(tmp_path)
    data = src / "lmdb" / "data.mdb"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    result = cli("restore", "--from", str(src), "--data-dir", str(tmp_path / "d"))
    assert result.exit_code == 4 and "corrupted" in result.stderr
    assert not (tmp_path / "d").exists()
    data.unlink()
    result = cli("restore", "--from", str(src), "--data-dir", str(tmp_path / "d"))
    assert result.exit_code == 4 and "missing" in result.stderr
    (src / "manifest.json").write_text("{}")
    result = cli("restore", "--from", str(src), "--data-dir", str(tmp_path / "d"))
    assert result.exit_code == 4 and "ringkv-backup/1" in result.stderr


def test_restore_refuses_a_non_empty_data_dir_unless_forced(tmp_path: Path) -> None:
    src = make_backup_dir(tmp_path, records=7)
    target = tmp_path / "d"
    old = LmdbEngine(str(target / "lmdb"), sync=False)
    old.put("data", b"old-only", b"x")
    old.commit(old.seal())
    old.close()
    (target / "notes.txt").write_text("operator's file")
    result = cli("restore", "--from", str(src), "--data-dir", str(target))
    assert result.exit_code == 4 and "not empty" in result.stderr and "--force" in result.stderr
    check = LmdbEngine(str(target / "lmdb"))
    assert check.get("data", b"old-only") == b"x"
    check.close()

    result = cli("restore", "--from", str(src), "--data-dir", str(target), "--force",
                 "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["replaced"] is True and summary["records"] == 7
    assert summary["members"] == 1 and summary["tokens"] == 3
    assert sorted(os.listdir(target)) == ["lmdb", "notes.txt"]  # nothing else touched
    check = LmdbEngine(str(target / "lmdb"))
    assert check.get("data", b"old-only") is None and check.get("data", b"key6") == b"value"
    check.close()


def test_restore_never_replaces_an_environment_a_process_has_open(tmp_path: Path) -> None:
    src = make_backup_dir(tmp_path)
    env = tmp_path / "d" / "lmdb"
    LmdbEngine(str(env), sync=False).close()
    with subprocess.Popen(
        [sys.executable, "-c", "import lmdb, sys; e = lmdb.open(sys.argv[1]);"
         " print('open', flush=True); sys.stdin.read()", str(env)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    ) as holder:  # a running node's hold on its environment, until stdin closes
        assert holder.stdout is not None and holder.stdout.readline() == b"open\n"
        result = cli("restore", "--from", str(src), "--data-dir", str(tmp_path / "d"),
                     "--force")
        assert result.exit_code == 4 and "stop the node" in result.stderr
    result = cli("restore", "--from", str(src), "--data-dir", str(tmp_path / "d"), "--force")
    assert result.exit_code == 0, result.output


def test_restore_refuses_an_environment_of_another_node(tmp_path: Path) -> None:
    src = make_backup_dir(tmp_path, node_id="n1", manifest_id="n2")
    with pytest.raises(BackupError, match="identity of 'n1', not of 'n2'"):
        restore_backup(str(src), str(tmp_path / "d"))
    assert not (tmp_path / "d").exists()


def test_restore_shows_progress_when_asked(tmp_path: Path) -> None:
    src = make_backup_dir(tmp_path)
    result = cli("restore", "--from", str(src), "--data-dir", str(tmp_path / "d"),
                 "--progress")
    assert result.exit_code == 0, result.output
    assert "lmdb/data.mdb (1/1 files)" in result.stderr
    assert "restored n1 into" in result.stdout and "ringkv serve --node-id n1" in result.stdout


def test_backup_takes_one_node_only() -> None:
    result = cli("backup", "--node", "http://a:1,http://b:2", "--out", "x")
    assert result.exit_code == 2 and "one node" in result.stderr


# ------------------------------------------------------------------- an HTTPS node


ADMIN_ROLE = "0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a"  # an admin-role token of the tokens file


def test_backup_of_an_https_node_takes_the_security_options(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ringkv.client import Client
    from ringkv.tools.certs import init_ca, issue

    for name in ("RINGKV_CA", "RINGKV_CERT", "RINGKV_KEY", "RINGKV_TOKEN",
                 "RINGKV_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    ca, _ = init_ca(tmp_path / "tls")
    crt, key = issue(tmp_path / "tls", "n1")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ADMIN_ROLE} admin\n")
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")

    async def go() -> dict[str, Any]:
        async with node(tmp_path / "d", tls_ca=str(ca), tls_cert=str(crt), tls_key=str(key),
                        http_tls="on", tokens_file=str(tokens)) as rt:
            base = f"https://{HOST}:{rt.config.http_port}"

            def write() -> None:
                with Client(base, ca=ca, token=ADMIN_ROLE) as kv:
                    for i in range(20):
                        kv.put(f"k{i}", b"v")

            await asyncio.to_thread(write)

            def run(name: str, *flags: str) -> Any:
                return cli("backup", "--node", base, "--out", str(tmp_path / name), *flags)

            return {
                # the CA, and the client token (admin role) as the credential
                "ok": await asyncio.to_thread(run, "ok", "--ca", str(ca), "--token",
                                              ADMIN_ROLE, "--json", "--progress"),
                "no_ca": await asyncio.to_thread(run, "no-ca", "--token", ADMIN_ROLE),
                "no_token": await asyncio.to_thread(run, "no-token", "--ca", str(ca)),
                # the admin token goes instead of the token: a wrong one is refused
                "admin_first": await asyncio.to_thread(
                    run, "admin-first", "--ca", str(ca), "--token", ADMIN_ROLE,
                    "--admin-token", "f" * 32),
                "bad_ca": await asyncio.to_thread(run, "bad-ca", "--ca", str(garbage)),
                "base": base,
            }

    got = asyncio.run(go())
    ok = got["ok"]
    assert ok.exit_code == 0, ok.output
    summary = json.loads(ok.stdout)
    assert summary["node_id"] == "n1" and summary["verified"] is True
    assert f"backing up {got['base']}" in ok.stderr  # the progress line
    assert (tmp_path / "ok" / "lmdb" / "data.mdb").is_file()
    restored = restore_backup(str(tmp_path / "ok"), str(tmp_path / "r"))
    assert restored.records >= 20

    no_ca = got["no_ca"]
    assert no_ca.exit_code == 4
    assert "cannot verify the TLS certificate" in no_ca.stderr and "--ca" in no_ca.stderr
    assert ADMIN_ROLE not in no_ca.stderr
    assert got["no_token"].exit_code == 4
    assert "requires an admin token" in got["no_token"].stderr
    assert got["admin_first"].exit_code == 4 and "401" in got["admin_first"].stderr
    assert got["bad_ca"].exit_code == 2 and str(garbage) in got["bad_ca"].stderr
    for name in ("no-ca", "no-token", "admin-first", "bad-ca"):
        assert not (tmp_path / name).exists()
