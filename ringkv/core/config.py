"""Node configuration: the frozen `NodeConfig`, its defaults and its rules.

Job: say what one node can be told at start-up (every setting, with its default and
the reason for it) and which combinations are valid. A bad setting is a `ConfigError`
whose message is a single line naming the setting *as the user wrote it* (`--r`,
`RINGKV_HTTP_PORT`, `http_port in node.toml`) when the caller knows how it was written,
else by its field name. `NodeConfig` validates itself on construction, so a config
built in code (tests, the simulator) obeys the same rules as one loaded by
`ringkv.core.config_loader` from the command line, the environment and a TOML file.

This module is pure (see `tests/lint/test_purity.py`): no asyncio, sockets or clocks,
and it never reads the environment.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, NoReturn

from gossip.membership import NODE_ID_RE
from pbs.distributions import LatencySpecError, parse_legs
from ring.allocation import MAX_VNODES
from storage.limits import MAX_RECORD_BYTES

__all__ = [
    "ConfigError",
    "NodeConfig",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "MAX_SIBLINGS",
    "STORAGE_ENGINES",
    "SYNC_MODES",
    "CONFLICT_MODES",
    "SETTING_KINDS",
    "check_settings",
    "cli_flag",
    "env_var",
    "fast_test_config",
    "format_hostport",
    "is_loopback",
    "parse_hostport",
]

ENV_PREFIX = "RINGKV_"
STORAGE_ENGINES = ("lmdb", "memory")
SYNC_MODES = ("group", "none")
CONFLICT_MODES = ("dvv", "lww")
HTTP_TLS_MODES = ("off", "on", "mutual")
MIN_MAX_MEMORY = 2 * MAX_RECORD_BYTES
MAX_SIBLINGS = 10000  # the highest --max-siblings: beyond it one key's writes crawl
MIN_MAP_SIZE = 1 << 20  # the smallest --map-size: room for the node's own metadata
MAX_MAP_SIZE = 1 << 46  # the largest --map-size: 64 TiB, within 64-bit address space
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigError(ValueError):
    """A bad setting. `str(err)` is one line: ``bad setting <where>: <problem>``."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = " ".join(problem.split())  # one line, whatever the cause said
        super().__init__(f"bad setting {setting}: {self.problem}")


@dataclass(frozen=True)
class NodeConfig:
    """Everything one node needs to know at start-up. Immutable; validated on creation."""

    # Stable identity; it names the node in the ring, in versions and in hints, so it
    # must survive restarts. No default: two nodes silently sharing one would be a bug.
    node_id: str
    # Loopback by default: a fresh node is not exposed to the network until asked to be.
    host: str = "127.0.0.1"
    # What peers and clients are told to dial; None means the bind host (right for
    # loopback and single-interface hosts, wrong behind NAT or when binding 0.0.0.0).
    advertise: str | None = None
    # Conventional alternate-HTTP port, so a default node does not need root.
    http_port: int = 8080
    # Kept 1000 above the HTTP port so the pair is easy to remember and to firewall.
    rpc_port: int = 9080
    # None means ./data/<node_id>: one directory per node, so several local nodes
    # started from the same working directory never share files.
    data_dir: str | None = None
    # Empty: this node starts a new cluster. Any one live member is enough to join.
    seeds: tuple[str, ...] = ()
    # Dynamo's classic (3, 2, 2): R + W > N gives read-your-writes without failures,
    # and the cluster stays readable and writable with one replica of each key down.
    n: int = 3
    r: int = 2
    w: int = 2
    # 256 tokens per node keeps each node's share of the ring within a few percent of
    # fair while a ring of a few dozen nodes still fits comfortably in memory.
    vnodes: int = 256
    # The durable engine; "memory" is for tests and throw-away clusters.
    storage: str = "lmdb"
    # Off by default for local development; set it on any shared network. Without it
    # anyone who reaches the RPC port is a peer, so a node binding a non-loopback
    # address refuses to start without it unless `insecure` says so.
    cluster_secret: str | None = None
    # The explicit opt-out of that rule (--insecure, RINGKV_INSECURE=1): one missing
    # secret cannot silently expose the RPC port to the network.
    insecure: bool = False
    # Bearer token for the admin endpoints (leave, remove, /debug/). None: only
    # loopback clients may call them, so a node on a network is not evicted by anyone.
    admin_token: str | None = None
    # One Merkle exchange per replica peer per minute: cheap when replicas agree
    # (one root hash), and hinted handoff plus read repair cover the common cases.
    anti_entropy_interval: float = 60.0
    # "group": one fsync per group-commit batch, so acknowledged writes survive power
    # loss at amortised cost. "none": leave flushing to the OS (benchmarks only).
    sync: str = "group"
    # 1 MiB, as the contract says: large enough for documents, small enough that one
    # value never stalls the replication pipe.
    max_value_bytes: int = 1 << 20
    # Versions one key may hold: context-less writes each add a sibling, and every
    # write to a key costs time linear in its siblings, so an unbounded key becomes
    # quadratic. 100 is far beyond any honest conflict; a write whose context covers
    # the siblings leaves one and always works (contract section 4).
    max_siblings: int = 100
    # 16 GiB: the most the LMDB map (the durable engine's data) may grow to. A map is
    # address space, not disk, so a large one costs nothing; a smaller one caps the
    # disk a node uses. A write that does not fit gets 507 and the node lives on.
    map_size: int = 1 << 34
    # 3 s: well above a healthy LAN round trip plus an fsync, well below a client's
    # patience; requests may ask for less or more with ?timeout=.
    request_timeout_ms: int = 3000
    # One gossip round every 0.5 s: membership news reaches 200 nodes in ~3 s and a
    # crash is judged down in ~5 s, for ~2 KB/s per node at 50 nodes
    # (docs/membership.md).
    heartbeat_interval: float = 0.5
    # Cassandra's phi_convict_threshold: a peer is down once the heartbeat silence has
    # a probability below 10**-8 under the inter-arrival times seen so far (plus a 1 s
    # allowance for pauses). 8 rides out a 1 s GC pause and convicts a crash in ~5 s.
    phi_convict_threshold: float = 8.0
    # Paced handoff: a recovering node is not flooded with every hint at once.
    hint_replay_batch: int = 64
    # A joiner waits this long before fetching its ranges, so that every coordinator
    # has learnt it is joining and sends it new writes: a write that reaches only the
    # old owners after the fetch passed its key would be missed (Cassandra's ring_delay).
    join_settle: float = 3.0
    # A record holding only tombstones is compacted to its causal context once every
    # replica holds it and this long has passed: a day leaves room to notice and repair
    # a fault before the tombstones go (Cassandra's gc_grace_seconds is ten days).
    tombstone_grace: float = 86400.0
    # "info" logs membership changes and start/stop; "debug" logs every request.
    log_level: str = "info"
    # "dvv": concurrent writes are kept as siblings (never lose a write). "lww": the
    # latest timestamp wins and concurrent writes are silently dropped, as Riak's
    # allow_mult=false and Cassandra do; an explicit opt-in, and the simulation's
    # negative control.
    conflict: str = "dvv"
    # Latency injection for consistency experiments (`ringkv.core.latency`): a delay spec per
    # WARS leg, e.g. "W=exp:10,A=exp:1,R=exp:1,S=exp:1" (ms). It slows the node on
    # purpose, so it is refused unless `experimental` is on too: one setting alone,
    # e.g. left over in a config file or the environment, cannot turn it on.
    inject_latency: str | None = None
    # The second switch for experimental settings (--experimental, RINGKV_EXPERIMENTAL=1).
    experimental: bool = False
    # Client connections served at once; past it a new one gets 503 and is closed. Each
    # may hold a request head (up to the largest context) and a value in memory.
    max_http_connections: int = 1024
    # Seconds a client has to send a whole request head once it starts one (or once it
    # connects): a half-sent head never holds a connection longer (slowloris).
    http_header_timeout: float = 10.0
    # Seconds a client has to send a request body once its head arrived (408 past it).
    http_body_timeout: float = 30.0
    # Seconds an idle keep-alive connection stays open: above common proxies' 60 s.
    http_keepalive_timeout: float = 75.0
    # Mutual TLS between nodes (`ringkv.net.tls`): the cluster CA and this node's
    # certificate and key (`ringkv certs`). All three or none; with them a node refuses
    # plaintext peers, and a peer's claimed id must be its certificate's.
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # TLS on the client HTTP port too, with the same certificate: "off", "on", or
    # "mutual" (clients must present a certificate of the cluster CA). Separate from
    # internode TLS, as Cassandra keeps client and internode encryption apart.
    http_tls: str = "off"
    # Client tokens with roles (`ringkv.server.access`): a file of `token role
    # [bucket,...]` lines. None: no client authentication (the contract's default).
    tokens_file: str | None = None
    # The memory engine's bound in bytes, LRU eviction past it (a cache); 0: none.
    max_memory: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.seeds, list):
            object.__setattr__(self, "seeds", tuple(self.seeds))
        check_settings({f.name: getattr(self, f.name) for f in fields(self)}, {})

    @property
    def advertise_host(self) -> str:
        """The host peers and clients should dial."""
        return self.advertise or self.host

    @property
    def data_path(self) -> str:
        """Where this node persists everything."""
        return self.data_dir or f"./data/{self.node_id}"

    @property
    def http_address(self) -> str:
        """Base URL of this node's client API as others should use it."""
        return f"http://{format_hostport(self.advertise_host, self.http_port)}"

    @property
    def rpc_address(self) -> str:
        """``host:port`` of this node's internode RPC as others should dial it."""
        return format_hostport(self.advertise_host, self.rpc_port)

    def to_args(self) -> list[str]:
        """Command-line arguments for `ringkv serve` that reproduce this config."""
        args: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "seeds":
                if not value:
                    continue
                value = ",".join(value)
            if isinstance(value, bool):  # a flag: present when on
                if value:
                    args.append(cli_flag(f.name))
                continue
            args += [cli_flag(f.name), str(value)]
        return args


# The kind of each setting: how it is parsed from text (env, command line) or a TOML
# value, and which type it must have once parsed.
SETTING_KINDS: dict[str, str] = {
    "node_id": "str",
    "host": "str",
    "advertise": "optstr",
    "http_port": "int",
    "rpc_port": "int",
    "data_dir": "optstr",
    "seeds": "seeds",
    "n": "int",
    "r": "int",
    "w": "int",
    "vnodes": "int",
    "storage": "choice",
    "cluster_secret": "optstr",
    "insecure": "bool",
    "admin_token": "optstr",
    "anti_entropy_interval": "float",
    "sync": "choice",
    "max_value_bytes": "int",
    "max_siblings": "int",
    "map_size": "int",
    "request_timeout_ms": "int",
    "heartbeat_interval": "float",
    "phi_convict_threshold": "float",
    "hint_replay_batch": "int",
    "join_settle": "float",
    "tombstone_grace": "float",
    "log_level": "choice",
    "conflict": "choice",
    "inject_latency": "optstr",
    "experimental": "bool",
    "max_http_connections": "int",
    "http_header_timeout": "float",
    "http_body_timeout": "float",
    "http_keepalive_timeout": "float",
    "tls_ca": "optstr",
    "tls_cert": "optstr",
    "tls_key": "optstr",
    "http_tls": "choice",
    "tokens_file": "optstr",
    "max_memory": "int",
}
assert set(SETTING_KINDS) == {f.name for f in fields(NodeConfig)}, "keep in step with NodeConfig"

_CHOICES: dict[str, tuple[str, ...]] = {
    "storage": STORAGE_ENGINES,
    "sync": SYNC_MODES,
    "log_level": LOG_LEVELS,
    "conflict": CONFLICT_MODES,
    "http_tls": HTTP_TLS_MODES,
}


def cli_flag(name: str) -> str:
    """The command-line option of a setting: ``http_port`` -> ``--http-port``."""
    return "--" + name.replace("_", "-")


def env_var(name: str) -> str:
    """The environment variable of a setting: ``http_port`` -> ``RINGKV_HTTP_PORT``."""
    return ENV_PREFIX + name.upper()


def parse_hostport(text: str) -> tuple[str, int]:
    """Split ``host:port`` (or ``[v6addr]:port``); raise ValueError when malformed."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"not host:port: {text!r}")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"not host:port: {text!r}")
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"not host:port: {text!r}")
    try:
        port = int(port_text, 10)
    except ValueError:
        raise ValueError(f"not host:port: {text!r}") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"port out of range 1..65535 in {text!r}")
    return host, port


def format_hostport(host: str, port: int) -> str:
    """Join host and port, bracketing IPv6 addresses."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def fast_test_config(node_id: str = "n1", **overrides: Any) -> NodeConfig:
    """A profile for tests: in-memory, no fsync, sub-second failure detection.

    Pass ports (and anything else) as keyword overrides.
    """
    profile: dict[str, Any] = {
        "storage": "memory",
        "sync": "none",
        "vnodes": 32,
        "heartbeat_interval": 0.05,
        "anti_entropy_interval": 1.0,
        "tombstone_grace": 2.0,
        "join_settle": 0.3,
        "request_timeout_ms": 1000,
        "log_level": "warning",
    }
    profile.update(overrides)
    return NodeConfig(node_id=node_id, **profile)


# --------------------------------------------------------------------------- validation


def check_settings(values: Mapping[str, Any], labels: Mapping[str, str]) -> None:
    """Validate types, ranges and cross-setting rules; raise ConfigError on the first.

    `values` maps field names to typed values (a loader may omit ``node_id``; that is
    reported last, as a missing required setting); `labels` tells how the user wrote
    each setting that was given, for the message.
    """

    def label(name: str) -> str:
        return labels.get(name, name)

    def fail(name: str, problem: str) -> NoReturn:
        raise ConfigError(label(name), problem)

    for name, kind in SETTING_KINDS.items():
        if name not in values:
            continue
        value = values[name]
        if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            fail(name, f"not an integer: {value!r}")
        if kind == "float" and (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            fail(name, f"not a finite number: {value!r}")
        if kind == "bool" and not isinstance(value, bool):
            fail(name, f"expected true or false, got {value!r}")
        if kind in ("str", "choice") and not isinstance(value, str):
            fail(name, f"expected a string, got {value!r}")
        if kind == "optstr" and not (value is None or (isinstance(value, str) and value)):
            fail(name, f"expected a non-empty string, got {value!r}")
        if kind == "seeds":
            if not isinstance(value, tuple):
                fail(name, f"expected a tuple of host:port, got {value!r}")
            for seed in value:
                try:
                    parse_hostport(seed)
                except (ValueError, TypeError, AttributeError) as exc:
                    fail(name, str(exc))

    if "node_id" in values and not NODE_ID_RE.fullmatch(values["node_id"]):
        fail("node_id", f"must match {NODE_ID_RE.pattern}, got {values['node_id']!r}")
    for name in ("host", "advertise"):
        host = values.get(name)
        if host is not None and (not host or any(c.isspace() for c in host)):
            fail(name, f"not a host name or address: {host!r}")
    for name in ("http_port", "rpc_port"):
        if not 1 <= values[name] <= 65535:
            fail(name, f"must be between 1 and 65535, got {values[name]}")
    if values["n"] < 1:
        fail("n", f"must be at least 1, got {values['n']}")
    if not 1 <= values["vnodes"] <= MAX_VNODES:
        fail("vnodes", f"must be between 1 and {MAX_VNODES}, got {values['vnodes']}")
    for name, choices in _CHOICES.items():
        if values[name] not in choices:
            fail(name, f"must be one of {', '.join(choices)}, got {values[name]!r}")
    if values["tombstone_grace"] < 0:
        fail("tombstone_grace", f"must be at least 0, got {values['tombstone_grace']}")
    for name in ("anti_entropy_interval", "heartbeat_interval", "phi_convict_threshold"):
        if values[name] <= 0:
            fail(name, f"must be greater than 0, got {values[name]}")
    if not 1 <= values["max_siblings"] <= MAX_SIBLINGS:
        fail("max_siblings",
             f"must be between 1 and {MAX_SIBLINGS}, got {values['max_siblings']}")
    if not MIN_MAP_SIZE <= values["map_size"] <= MAX_MAP_SIZE:
        fail("map_size", f"must be between {MIN_MAP_SIZE} and {MAX_MAP_SIZE} bytes,"
             f" got {values['map_size']}")
    if values["join_settle"] < 0:
        fail("join_settle", f"must be at least 0, got {values['join_settle']}")
    for name in ("max_value_bytes", "request_timeout_ms", "hint_replay_batch"):
        if values[name] < 1:
            fail(name, f"must be at least 1, got {values[name]}")
    if values["max_http_connections"] < 1:
        fail("max_http_connections", f"must be at least 1, got {values['max_http_connections']}")
    for name in ("http_header_timeout", "http_body_timeout", "http_keepalive_timeout"):
        if values[name] <= 0:
            fail(name, f"must be greater than 0, got {values[name]}")

    # Cross-setting rules: blame the setting the user actually gave.
    n = values["n"]
    for name in ("r", "w"):
        value = values[name]
        if value < 1 or (value > n and (name in labels or "n" not in labels)):
            fail(name, f"must be between 1 and n ({n}), got {value}")
        if value > n:
            fail("n", f"must be at least r ({values['r']}) and w ({values['w']}), got {n}")
    if values["http_port"] == values["rpc_port"]:
        name = "http_port" if "http_port" in labels and "rpc_port" not in labels else "rpc_port"
        other = "rpc_port" if name == "http_port" else "http_port"
        fail(name, f"must differ from the {other.replace('_', ' ')} ({values[other]})")
    _check_inject_latency(values, fail)
    _check_tls(values, fail)
    if values["max_memory"] and not values["max_memory"] >= MIN_MAX_MEMORY:
        fail("max_memory", f"must be 0 (no bound) or at least {MIN_MAX_MEMORY} bytes (twice"
             f" the largest record), got {values['max_memory']}")
    if values["max_memory"] and values["storage"] != "memory":
        fail("max_memory", "bounds the memory engine only: give --storage memory too")
    _check_internode_auth(values)
    if "node_id" not in values:
        raise ConfigError(
            "--node-id",
            f"required (give --node-id, {env_var('node_id')} or node_id in the config file)",
        )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ``::1``), by text only."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a host name: it may resolve to anything
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _check_tls(values: Mapping[str, Any], fail: Callable[[str, str], NoReturn]) -> None:
    """TLS takes the CA, the certificate and the key together; HTTPS needs them."""
    given = [name for name in ("tls_ca", "tls_cert", "tls_key") if values.get(name)]
    if given and len(given) < 3:
        missing = [n for n in ("tls_ca", "tls_cert", "tls_key") if n not in given][0]
        fail(missing, "TLS needs --tls-ca, --tls-cert and --tls-key together")
    if values.get("http_tls", "off") != "off" and not given:
        fail("http_tls", "HTTPS needs a certificate: give --tls-ca, --tls-cert and --tls-key")


def _check_internode_auth(values: Mapping[str, Any]) -> None:
    """Binding beyond loopback needs internode authentication (a cluster secret or
    mutual TLS), or the explicit --insecure."""
    host = values.get("host", "127.0.0.1")
    if (values.get("cluster_secret") or values.get("tls_cert") or values.get("insecure")
            or is_loopback(host)):
        return
    # Named as the contract names it, whatever source left it unset.
    raise ConfigError(
        "--cluster-secret",
        f"required when binding the non-loopback address {host}: without it anyone who"
        " reaches the RPC port is a peer and can write any value; give --cluster-secret,"
        f" {env_var('cluster_secret')} or {env_var('cluster_secret')}_FILE, or pass"
        " --insecure to run without internode authentication")


def _check_inject_latency(values: Mapping[str, Any],
                          fail: Callable[[str, str], NoReturn]) -> None:
    """Latency injection needs a valid spec and the explicit experimental switch."""
    spec = values.get("inject_latency")
    if spec is None:
        return
    try:
        parse_legs(spec)
    except LatencySpecError as exc:
        fail("inject_latency", str(exc))
    if not values.get("experimental"):
        fail("inject_latency", "latency injection slows every replica message on purpose "
             "and is for experiments only; it also needs --experimental "
             f"(or {env_var('experimental')}=1)")
