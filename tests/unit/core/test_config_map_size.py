"""`map_size` (`--map-size`, RINGKV_MAP_SIZE, `map_size` in the file): the LMDB map's cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringkv.core.config import ConfigError
from ringkv.core.config_loader import load_config


def test_map_size_defaults_to_16_gib_and_comes_from_flag_env_or_file(tmp_path: Path) -> None:
    assert load_config({"node_id": "n1"}, {}).map_size == 1 << 34
    assert load_config({"node_id": "n1", "map_size": "1048576"}, {}).map_size == 1 << 20
    env = {"RINGKV_MAP_SIZE": str(1 << 30)}
    assert load_config({"node_id": "n1"}, env).map_size == 1 << 30
    path = tmp_path / "node.toml"
    path.write_text('node_id = "n1"\nmap_size = 4194304\n')
    assert load_config({"config": str(path)}, {}).map_size == 4 << 20


@pytest.mark.parametrize("bad", ["0", "1000", "lots", str(1 << 50)])
def test_a_bad_map_size_names_the_setting(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"node_id": "n1", "map_size": bad}, {})
    assert "map-size" in str(info.value)
