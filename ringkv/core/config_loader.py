"""Loading a `NodeConfig` from the command line, the environment and a TOML file.

Job: turn the four sources of contract section 1 -- command line, environment
(`RINGKV_*`), TOML config file (`--config` / `RINGKV_CONFIG`) and defaults, in that
order of precedence -- into one validated `NodeConfig`, or fail with a `ConfigError`
whose message is a single line naming the bad setting *as the user wrote it*
(`--r`, `RINGKV_HTTP_PORT`, `http_port in node.toml`). Text is parsed here, per the
setting's kind in `ringkv.core.config.SETTING_KINDS`; the rules a parsed config must
obey are `ringkv.core.config`'s, applied with the labels gathered here.

Two inputs are sources rather than settings, so they are not fields of `NodeConfig`:
the config file itself, and `cluster_secret_file` (`--cluster-secret-file`,
`RINGKV_CLUSTER_SECRET_FILE`), a file holding the cluster secret so that the secret
never has to sit on a command line or in a long-lived environment. Its content,
stripped of surrounding whitespace, is the `cluster_secret`; an empty, unreadable or
oversized file is a bad setting, and so is giving both a secret and a secret file.

This module is pure (see `tests/lint/test_purity.py`): no asyncio, sockets or clocks.
The environment is read in exactly one place, `load_config`, and only when the caller
does not pass `env` explicitly. Files are read only when a config file or a secret file is named.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, fields
from typing import Any

from ringkv.core.config import (
    SETTING_KINDS,
    ConfigError,
    NodeConfig,
    check_settings,
    cli_flag,
    env_var,
    parse_hostport,
)

__all__ = ["load_config"]

_ALIASES: dict[str, dict[str, str]] = {"log_level": {"warn": "warning", "fatal": "critical"}}
_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(NodeConfig) if f.default is not MISSING
}

SECRET_FILE = "cluster_secret_file"
MAX_SECRET_FILE_BYTES = 4096  # a secret is a few dozen bytes; anything larger is a mistake

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def load_config(cli: Mapping[str, object], env: Mapping[str, str] | None = None) -> NodeConfig:
    """Build a `NodeConfig` from command line > environment > config file > defaults.

    `cli` maps setting names (``node_id``, ``http_port``, ... and ``config`` for the
    file) to values; None means "not given". Values may be text (parsed here, so a
    bad one is reported against its option) or already typed. `env` defaults to the
    process environment: this is the only place ringkv reads it. Empty environment
    variables count as unset.
    """
    if env is None:
        env = os.environ
    given: dict[str, tuple[object, str]] = {}  # name -> (raw value, where it came from)

    cli_values: dict[str, object] = {}
    for key, value in cli.items():
        name = key.replace("-", "_")
        if name not in ("config", SECRET_FILE) and name not in SETTING_KINDS:
            raise ConfigError(cli_flag(name), "unknown setting")
        if value is not None:
            cli_values[name] = value

    # Lowest explicit source first; each later one overrides.
    if "config" in cli_values:
        path, path_label = cli_values.pop("config"), "--config"
    elif env.get(env_var("config")):
        path, path_label = env[env_var("config")], env_var("config")
    else:
        path, path_label = None, ""
    if path is not None:
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise ConfigError(path_label, f"expected a file name, got {path!r}")
        given.update(_read_toml(os.fspath(path), path_label))
    secret_file = given.pop(SECRET_FILE, None)
    for name in (*SETTING_KINDS, SECRET_FILE):
        raw = env.get(env_var(name))
        if raw is not None and raw != "":
            if name == SECRET_FILE:
                secret_file = (raw, env_var(name))
            else:
                given[name] = (raw, env_var(name))
    if SECRET_FILE in cli_values:
        secret_file = (cli_values.pop(SECRET_FILE), cli_flag(SECRET_FILE))
    for name, value in cli_values.items():
        given[name] = (value, cli_flag(name))
    if secret_file is not None:
        file_name, file_label = secret_file
        if "cluster_secret" in given:
            raise ConfigError(file_label, f"give either {given['cluster_secret'][1]} or "
                              f"{file_label}, not both")
        given["cluster_secret"] = (_read_secret(file_name, file_label), file_label)

    values: dict[str, Any] = dict(_DEFAULTS)
    labels: dict[str, str] = {}
    for name in SETTING_KINDS:  # field order, so the first bad setting reported is stable
        if name in given:
            given_raw, label = given[name]
            values[name] = _coerce(name, given_raw, label)
            labels[name] = label
    check_settings(values, labels)
    return NodeConfig(**values)


# ---------------------------------------------------------------------------- internals


def _read_secret(path: object, label: str) -> str:
    """The secret held by a file, stripped of surrounding whitespace; never empty."""
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise ConfigError(label, f"expected a file name, got {path!r}")
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(label, f"cannot read {path!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(label, f"{path!r} is larger than {MAX_SECRET_FILE_BYTES} bytes;"
                          " it should hold only the secret")
    try:
        secret = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(label, f"{path!r} is not UTF-8 text") from None
    if not secret:
        raise ConfigError(label, f"{path!r} is empty; it should hold the cluster secret")
    return secret


def _read_toml(path: str, path_label: str) -> dict[str, tuple[object, str]]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(path_label, f"cannot read {path!r}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path_label, f"invalid TOML in {path!r}: {exc}") from None
    out: dict[str, tuple[object, str]] = {}
    for key, value in data.items():
        label = f"{key} in {path}"
        if key not in SETTING_KINDS and key != SECRET_FILE:
            close = difflib.get_close_matches(key, [*SETTING_KINDS, SECRET_FILE], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(label, f"unknown setting{hint}")
        out[key] = (value, label)
    return out


def _coerce(name: str, raw: object, label: str) -> Any:
    """Parse one raw value (text or typed) into the setting's type."""
    kind = SETTING_KINDS[name]
    if kind == "int":
        if isinstance(raw, bool):
            raise ConfigError(label, f"not an integer: {raw!r}")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, str):
            try:
                return int(raw.strip(), 10)
            except ValueError:
                pass
        raise ConfigError(label, f"not an integer: {raw!r}")
    if kind == "float":
        if isinstance(raw, bool):
            raise ConfigError(label, f"not a number: {raw!r}")
        if isinstance(raw, int | float):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw.strip())
            except ValueError:
                pass
        raise ConfigError(label, f"not a number: {raw!r}")
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise ConfigError(label, f"expected 1/0, true/false, yes/no or on/off, got {raw!r}")
    if kind == "seeds":
        if isinstance(raw, str):
            items: list[object] = list(raw.split(","))
        elif isinstance(raw, list | tuple):
            items = list(raw)
        else:
            raise ConfigError(label, f"expected comma-separated host:port, got {raw!r}")
        seeds: list[str] = []
        for item in items:
            if not isinstance(item, str):
                raise ConfigError(label, f"expected host:port strings, got {item!r}")
            item = item.strip()
            if item:
                try:
                    parse_hostport(item)
                except ValueError as exc:
                    raise ConfigError(label, str(exc)) from None
                seeds.append(item)
        return tuple(seeds)
    if not isinstance(raw, str):
        raise ConfigError(label, f"expected a string, got {raw!r}")
    text = raw.strip()
    if kind == "optstr":
        return text or None
    if kind == "choice":
        text = text.lower()
        return _ALIASES.get(name, {}).get(text, text)
    return text
