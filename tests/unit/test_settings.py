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
