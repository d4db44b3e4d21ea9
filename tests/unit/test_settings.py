"""The one settings object: defaults, then the YAML file, then the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakehook.errors import ConfigError
from lakehook.settings import Settings


def test_environment_overrides_file_overrides_defaults(tmp_path: Path) -> None:
    config = tmp_path / "lakehook.yaml"
    config.write_text("workers: 5\nreconcile_interval: 30\ntrino_user: from-file\n")
    settings = Settings.load({"LAKEHOOK_CONFIG": str(config), "LAKEHOOK_WORKERS": "3"})
    assert settings.workers == 3
    assert settings.reconcile_interval == 30.0
    assert settings.trino_user == "from-file"
    assert settings.metastore_api == "thrift"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"LAKEHOOK_METASTORE_API": "jdbc"}, "LAKEHOOK_METASTORE_API"),
        ({"LAKEHOOK_WORKERS": "0"}, "LAKEHOOK_WORKERS"),
        ({"LAKEHOOK_WORKERS": "two"}, "LAKEHOOK_WORKERS"),
        ({"LAKEHOOK_LISTEN": "8090"}, "LAKEHOOK_LISTEN"),
        ({"LAKEHOOK_RECONCILE_INTERVAL": "-1"}, "LAKEHOOK_RECONCILE_INTERVAL"),
        ({"LAKEHOOK_HMS_URI": "http://hms:9083"}, "LAKEHOOK_HMS_URI"),
        ({"LAKEHOOK_LOG_LEVEL": "verbose"}, "LAKEHOOK_LOG_LEVEL='verbose'.*DEBUG, INFO, WARNING"),
        ({"LAKEHOOK_WORKERS": "two"}, "LAKEHOOK_WORKERS='two'.*whole number"),
        ({"LAKEHOOK_JOB_LEASE_SECONDS": "soon"}, "LAKEHOOK_JOB_LEASE_SECONDS='soon'.*a number"),
        ({"LAKEHOOK_WORKER_NICE": "20"}, "LAKEHOOK_WORKER_NICE=20 must be 0 to 19"),
        ({"LAKEHOOK_HTTP_THREADS": "2"}, "LAKEHOOK_HTTP_THREADS=2 must be 4 to 1024"),
        ({"LAKEHOOK_HTTP_REQUEST_TIMEOUT": "0"}, "LAKEHOOK_HTTP_REQUEST_TIMEOUT=0.0 must be"),
        ({"LAKEHOOK_WORKER_NICE": "-5"}, "LAKEHOOK_WORKER_NICE=-5 must be 0 to 19"),
        ({"LAKEHOOK_WORKER_SCHEDULING": "fifo"}, "LAKEHOOK_WORKER_SCHEDULING='fifo' must be"),
        ({"LAKEHOOK_GATE_PROCESSES": "-1"}, "LAKEHOOK_GATE_PROCESSES=-1 must be 0 to 16"),
        ({"LAKEHOOK_GATE_NICE": "20"}, "LAKEHOOK_GATE_NICE=20 must be 0 to 19"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.load(env)


def test_unknown_key_in_the_file_lists_the_known_ones(tmp_path: Path) -> None:
    config = tmp_path / "lakehook.yaml"
    config.write_text("wokers: 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'wokers'.*workers"):
        Settings.load({"LAKEHOOK_CONFIG": str(config)})


def test_repr_shows_no_secret() -> None:
    settings = Settings.load(
        {
            "LAKEHOOK_WEBHOOK_TOKEN": "token-" + "t" * 40,
            "LAKEHOOK_SIGNING_KEY": "signing-" + "k" * 40,
            "LAKEHOOK_LAKEFS_SECRET_ACCESS_KEY": "secret-" + "s" * 40,
        }
    )
    text = repr(settings) + str(settings)
    for secret in ("t" * 40, "k" * 40, "s" * 40):
        assert secret not in text
    assert "lakefs_url" in text


@pytest.mark.parametrize(
    ("listen", "token", "refused"),
    [
        ("127.0.0.1:8090", "short", False),
        ("localhost:8090", "short", False),
        ("[::1]:8090", "short", False),
        ("0.0.0.0:8090", "short", True),
        ("10.1.2.3:8090", "x" * 31, True),
        ("lakehook.example:8090", "x" * 31, True),
        ("0.0.0.0:8090", "x" * 32, False),
    ],
)
def test_a_public_listen_address_needs_a_long_token(listen: str, token: str, refused: bool) -> None:
    settings = Settings.load({"LAKEHOOK_LISTEN": listen, "LAKEHOOK_WEBHOOK_TOKEN": token})
    if refused:
        with pytest.raises(ConfigError, match="not a loopback address.*at least 32") as err:
            settings.check_serving()
        assert token not in str(err.value)
    else:
        settings.check_serving()


def test_signing_key_is_made_once_with_0600(tmp_path: Path) -> None:
    settings = Settings.load({"LAKEHOOK_STATE_DIR": str(tmp_path / "state")})
    key = settings.signing_secret()
    path = tmp_path / "state" / "signing.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(key) == 64
    assert settings.signing_secret() == key  # read back, not made again
    assert Settings.load({"LAKEHOOK_STATE_DIR": str(tmp_path / "state")}).signing_secret() == key
    explicit = Settings.load({"LAKEHOOK_STATE_DIR": str(tmp_path), "LAKEHOOK_SIGNING_KEY": "k1"})
    assert explicit.signing_secret() == b"k1"
    assert not any("SIGNING" in line for line in settings.export_lines())


def test_racing_processes_end_up_with_one_signing_key(tmp_path: Path) -> None:
    import concurrent.futures

    from lakehook.settings import ensure_signing_key

    path = tmp_path / "signing.key"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: ensure_signing_key(path), range(32)))
    assert keys == {path.read_text().strip()}


def test_log_level_is_case_insensitive() -> None:
    assert Settings.load({"LAKEHOOK_LOG_LEVEL": "debug"}).log_level == "debug"


@pytest.mark.parametrize("command", [["serve"], ["status", "--repo", "study"]])
def test_a_bad_setting_is_one_line_and_exit_1_without_traceback(
    command: list[str], tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "LAKEHOOK_LOG_LEVEL": "verbose", "LAKEHOOK_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", "from lakehook.cli import main; main()", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "LAKEHOOK_LOG_LEVEL='verbose'" in lines[0]
    assert "DEBUG, INFO, WARNING, ERROR, CRITICAL" in lines[0]
    assert "Traceback" not in done.stderr


def test_the_queue_url_must_be_postgresql_and_replicas_must_share_the_signing_key() -> None:
    with pytest.raises(ConfigError, match="LAKEHOOK_QUEUE_URL must be a PostgreSQL URL"):
        Settings.load({"LAKEHOOK_QUEUE_URL": "mysql://x@h/db"})
    url = "postgresql://lakehook:s3cret-pw@127.0.0.1:5432/lakehook"
    settings = Settings.load({"LAKEHOOK_QUEUE_URL": url})
    assert "s3cret-pw" not in repr(settings)
    with pytest.raises(ConfigError, match="LAKEHOOK_SIGNING_KEY"):
        settings.check_serving()
    Settings.load({"LAKEHOOK_QUEUE_URL": url, "LAKEHOOK_SIGNING_KEY": "k" * 40}).check_serving()


def test_the_worker_memory_ceiling_follows_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """4096 MiB fits a 1 GB job on 2 cores with ~1.8 GiB to spare; each core adds pyarrow and
    allocator threads whose reservations count against RLIMIT_AS, so a fixed 4096 would refuse
    any job on a large machine."""
    from lakehook.settings import default_memory_limit_mb

    assert default_memory_limit_mb(2) == 4096
    assert default_memory_limit_mb(1) == 4096
    assert default_memory_limit_mb(16) == 4096 + 14 * 256
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert Settings.load({}).worker_memory_limit_mb == 7680
    assert Settings.load({"LAKEHOOK_WORKER_MEMORY_LIMIT_MB": "3000"}).worker_memory_limit_mb == 3000
