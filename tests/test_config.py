"""Every class of config error names the file and the key, and `sniper run` exits 2 on it."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sniper import config
from sniper.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path, environ=None):
    with pytest.raises(ConfigError) as info:
        config.load(path, environ={} if environ is None else environ)
    return info.value


@pytest.mark.parametrize("name", ["sim.yaml", "testnet.yaml", "live.yaml"])
def test_shipped_configs_load(name):
    env = {"BITMEX_API_KEY": "k" * 24, "BITMEX_API_SECRET": "s" * 48}
    cfg = config.load(ROOT / "configs" / name, environ=env)
    assert cfg.exchange.base_url == name.split(".")[0]
    assert cfg.api_credentials(env).key == ("sim-demo-key" if name == "sim.yaml" else "k" * 24)


def test_shipped_configs_document_every_key():
    """Each key line in the shipped configs carries a comment (the files are the reference)."""
    for name in ("sim.yaml", "testnet.yaml", "live.yaml"):
        for line in (ROOT / "configs" / name).read_text().splitlines():
            stripped = line.strip()
            if stripped and not stripped.startswith("#") and not stripped.endswith(":") and ":" in stripped:
                assert "#" in line or stripped.startswith(("api_key", "api_secret")), f"{name}: {line}"


def test_unknown_key_names_path(tmp_path):
    err = error_of(write(tmp_path, "exchange: {base_url: sim}\nrisk:\n  max_positon: 5\n"))
    assert err.key == "risk.max_positon"
    assert "unknown key" in str(err) and "max_position" in str(err) and "c.yaml" in str(err)


def test_unknown_top_level_key(tmp_path):
    err = error_of(write(tmp_path, "exchange: {base_url: sim}\nrisks: {}\n"))
    assert err.key == "risks"


def test_wrong_type_names_key_and_expected(tmp_path):
    err = error_of(write(tmp_path, "exchange: {base_url: sim}\nexecution:\n  cycle_seconds: fast\n"))
    assert str(err).endswith("execution.cycle_seconds: expected a number, got 'fast'")


def test_bool_is_not_an_integer(tmp_path):
    err = error_of(write(tmp_path, "exchange: {base_url: sim}\nrisk: {max_position: true}\n"))
    assert err.key == "risk.max_position" and "integer" in err.problem


def test_out_of_range(tmp_path):
    err = error_of(write(tmp_path, "exchange: {base_url: sim}\nrisk: {max_leverage: 500}\n"))
    assert err.key == "risk.max_leverage" and "<= 100" in err.problem


def test_bad_choice(tmp_path):
    err = error_of(write(tmp_path, "exchange: {base_url: sim}\nexecution: {stray_orders: aggressive}\n"))
    assert err.key == "execution.stray_orders" and "cancel" in err.problem


def test_missing_required_key(tmp_path):
    assert error_of(write(tmp_path, "risk: {}\n")).key == "exchange"
    assert error_of(write(tmp_path, "exchange: {symbol: XBTUSD}\n")).key == "exchange.base_url"


def test_bad_base_url(tmp_path):
    err = error_of(write(tmp_path, "exchange: {base_url: 'ftp://example'}\n"))
    assert err.key == "exchange.base_url"


def test_live_without_credentials(tmp_path):
    err = error_of(write(tmp_path, "exchange: {base_url: live}\n"))
    assert err.key == "credentials" and "BITMEX_API_KEY" in err.problem


def test_half_set_environment(tmp_path):
    err = error_of(write(tmp_path, "exchange: {base_url: live}\n"), environ={"BITMEX_API_KEY": "abc"})
    assert "BITMEX_API_SECRET" in err.problem


def test_inline_secret_refused_for_live(tmp_path):
    err = error_of(write(tmp_path, "exchange: {base_url: live}\ncredentials: {api_key: a, api_secret: b}\n"))
    assert err.key == "credentials.api_secret"


def test_secrets_file_must_be_private(tmp_path):
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("api_key: kkkkkk\napi_secret: ssssssssssss\n")
    secrets.chmod(0o644)
    path = write(tmp_path, f"exchange: {{base_url: testnet}}\ncredentials: {{secrets_file: {secrets}}}\n")
    err = error_of(path)
    assert err.key == "credentials.secrets_file" and "chmod 600" in err.problem
    secrets.chmod(0o600)
    creds = config.load(path, environ={}).api_credentials({})
    assert (creds.key, creds.secret) == ("kkkkkk", "ssssssssssss")


def test_secrets_file_missing_fields(tmp_path):
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("api_key: kkkkkk\n")
    secrets.chmod(0o600)
    err = error_of(write(tmp_path, f"exchange: {{base_url: testnet}}\ncredentials: {{secrets_file: {secrets}}}\n"))
    assert "api_secret" in err.problem


def test_environment_wins_over_file_and_never_reaches_the_sim(tmp_path):
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("api_key: filekey\napi_secret: filesecret123\n")
    secrets.chmod(0o600)
    env = {"BITMEX_API_KEY": "envkey", "BITMEX_API_SECRET": "envsecret123"}
    cfg = config.load(write(tmp_path, f"exchange: {{base_url: testnet}}\ncredentials: {{secrets_file: {secrets}}}\n"),
                      environ=env)
    assert cfg.api_credentials(env).key == "envkey"
    assert cfg.api_credentials({}).key == "filekey"
    sim = config.load(write(tmp_path, "exchange: {base_url: sim}\n", "sim.yaml"), environ=env)
    assert sim.api_credentials(env).key == config.SIM_DEMO_KEY


def test_invalid_yaml_and_missing_file(tmp_path):
    assert "line 2" in str(error_of(write(tmp_path, "exchange: {base_url: sim\n")))
    assert "not found" in str(error_of(tmp_path / "absent.yaml"))


def test_config_is_frozen(tmp_path):
    cfg = config.load(write(tmp_path, "exchange: {base_url: sim}\n"), environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.risk.max_position = 10  # type: ignore[misc]
    assert "sim-demo-secret" not in repr(cfg)


def run_cli(*args, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BITMEX_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "sniper", *args], capture_output=True, text=True,
                          cwd=ROOT, env=full_env, timeout=60)


@pytest.mark.parametrize("text,key", [
    ("exchange: {base_url: sim}\nrisk: {bogus: 1}\n", "risk.bogus"),
    ("exchange: {base_url: sim}\nrisk: {max_position: many}\n", "risk.max_position"),
    ("exchange: {base_url: sim}\nrisk: {max_leverage: -1}\n", "risk.max_leverage"),
    ("strategy: {name: flat}\n", "exchange"),
    ("exchange: {base_url: live}\n", "credentials"),
])
def test_cli_exits_2_with_one_line(tmp_path, text, key):
    path = write(tmp_path, text)
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"{path}: {key}:" in lines[0]
