"""Configuration of TLS, client tokens and the memory bound: each bad setting is named."""

from __future__ import annotations

import pytest

from ringkv.core.config import ConfigError, fast_test_config


@pytest.mark.parametrize("overrides, named", [
    ({"tls_ca": "ca.crt"}, "tls_cert"),
    ({"tls_ca": "ca.crt", "tls_cert": "n1.crt"}, "tls_key"),
    ({"http_tls": "on"}, "http_tls"),
    ({"http_tls": "always"}, "http_tls"),
    ({"max_memory": 1 << 20, "storage": "memory"}, "max_memory"),
    ({"max_memory": 1 << 30, "storage": "lmdb"}, "max_memory"),
])
def test_bad_settings_name_themselves(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError) as err:
        fast_test_config("n1", **overrides)
    assert named.replace("_", "-") in str(err.value) or named in str(err.value)


def test_tls_counts_as_internode_authentication_off_loopback() -> None:
    tls = {"tls_ca": "ca.crt", "tls_cert": "n1.crt", "tls_key": "n1.key"}
    fast_test_config("n1", host="10.0.0.5", **tls)
    with pytest.raises(ConfigError, match="cluster-secret"):
        fast_test_config("n1", host="10.0.0.5")


def test_a_memory_bound_with_the_memory_engine_is_taken() -> None:
    assert fast_test_config("n1", storage="memory", max_memory=1 << 30).max_memory == 1 << 30
