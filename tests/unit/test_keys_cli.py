"""`conveyor keys generate` and the key's place in `conveyor config` (no services needed)."""

from __future__ import annotations

import json
import os

from jobs.keyring import Keyring
from tests.helpers import run_cli


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return {**base, **extra}


def test_generate_prints_a_key_the_setting_accepts() -> None:
    done = run_cli("keys", "generate", "--id", "2026-12", env=env())
    assert done.returncode == 0, done.stderr
    ring = Keyring.parse(done.stdout.strip())
    assert ring.current.id == "2026-12"
    bad = run_cli("keys", "generate", "--id", "no spaces", env=env())
    assert bad.returncode == 2
    assert "--id" in bad.stderr


def test_config_never_prints_the_encryption_keys() -> None:
    key = run_cli("keys", "generate", env=env()).stdout.strip()
    secret = key.partition(":")[2]
    shown = run_cli("config", "--json", env=env(CONVEYOR_ENCRYPTION_KEYS=key))
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["encryption_keys"] == "***"
    assert secret not in run_cli("config", env=env(CONVEYOR_ENCRYPTION_KEYS=key)).stdout


def test_rotate_without_keys_is_a_usage_error() -> None:
    done = run_cli("keys", "rotate", env=env(CONVEYOR_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none"))
    assert done.returncode == 2
    assert "CONVEYOR_ENCRYPTION_KEYS" in done.stderr
