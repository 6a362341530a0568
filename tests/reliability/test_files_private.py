"""Files that say what the account does are private: log files (rotated ones too) are created
0600, and a secrets file readable by others is refused whichever exchange the config names."""

import io
import logging
import os
import stat

import pytest

from sniper import config, log
from sniper.config import ConfigError


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_log_file_and_its_rotations_are_created_0600(tmp_path):
    path = tmp_path / "logs" / "sniper.log"
    old = os.umask(0o022)  # the usual umask would give 0644
    try:
        log.setup(level="INFO", file=str(path), max_bytes=200, backups=2, stream=io.StringIO())
        for i in range(20):
            logging.getLogger("private").info("line %d %s", i, "x" * 40)
    finally:
        log.setup(level="WARNING")
        os.umask(old)
    rotated = sorted(p.name for p in path.parent.iterdir())
    assert rotated == ["sniper.log", "sniper.log.1", "sniper.log.2"]
    assert all(mode(path.parent / name) == 0o600 for name in rotated), {n: oct(mode(path.parent / n)) for n in rotated}


def test_an_existing_world_readable_log_file_is_narrowed(tmp_path):
    path = tmp_path / "sniper.log"
    path.write_text("old\n")
    path.chmod(0o644)
    log.setup(level="INFO", file=str(path), stream=io.StringIO())
    log.setup(level="WARNING")
    assert mode(path) == 0o600 and path.read_text() == "old\n"


@pytest.mark.parametrize("base_url", ["sim", "testnet"])
def test_group_readable_secrets_file_is_refused_for_any_exchange(tmp_path, base_url):
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("api_key: k\napi_secret: s\n")
    secrets.chmod(0o640)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"exchange: {{base_url: {base_url}}}\ncredentials: {{secrets_file: {secrets}}}\n")
    with pytest.raises(ConfigError) as info:
        config.load(cfg, environ={})
    assert info.value.key == "credentials.secrets_file" and "chmod 600" in info.value.problem
