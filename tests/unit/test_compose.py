"""docker-compose.yml agrees with the local defaults (it cannot run here: no Docker engine)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from lakehook.errors import ConfigError
from lakehook.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def host_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(p).split(":")[0]) for p in service.get("ports", [])}


def test_services_and_ports_match_the_local_defaults(compose: dict[str, Any]) -> None:
    s = Settings()
    services = compose["services"]
    assert {
        "lakefs",
        "trino",
        "hive-metastore",
        "marquez",
        "marquez-web",
        "minio",
        "lakehook",
    } <= set(services)
    assert urlparse(s.lakefs_url).port in host_ports(services["lakefs"])
    assert s.trino_host_port[1] in host_ports(services["trino"])
    assert s.hms_host_port[1] in host_ports(services["hive-metastore"])
    assert 5000 in host_ports(services["marquez"])
    assert s.listen_port in host_ports(services["lakehook"])
    assert services["lakefs"]["image"] == "treeverse/lakefs:1.84.0"
    assert services["trino"]["image"] == "trinodb/trino:476"
    assert services["hive-metastore"]["image"].startswith("apache/hive:4.")
    # the same Marquez as the local stack builds from source (lakehook/stack/versions.py)
    from lakehook.stack import versions

    assert services["marquez"]["image"] == f"marquezproject/marquez:{versions.MARQUEZ}"
    assert services["marquez-web"]["image"] == f"marquezproject/marquez-web:{versions.MARQUEZ}"
    assert 3000 in host_ports(services["marquez-web"])


def test_credentials_and_token_agree(compose: dict[str, Any]) -> None:
    s = Settings()
    lakefs_env = compose["services"]["lakefs"]["environment"]
    assert lakefs_env["LAKEFS_INSTALLATION_ACCESS_KEY_ID"] == s.lakefs_access_key_id
    assert lakefs_env["LAKEFS_INSTALLATION_SECRET_ACCESS_KEY"] == s.lakefs_secret_access_key
    lakehook_env = compose["services"]["lakehook"]["environment"]
    assert lakehook_env["LAKEHOOK_TRINO_CATALOG"] == s.trino_catalog
    # one token for both sides, taken from the environment with no default (contract §9 v1.1)
    token = lakehook_env["LAKEHOOK_WEBHOOK_TOKEN"]
    assert token == lakefs_env["LAKEFSACTION_LAKEHOOK_TOKEN"]
    for secret in (token, lakehook_env["LAKEHOOK_SIGNING_KEY"]):
        assert secret.startswith(("${LAKEHOOK_WEBHOOK_TOKEN:?", "${LAKEHOOK_SIGNING_KEY:?"))
        assert ":-" not in secret
    given = {k: str(v) for k, v in lakehook_env.items() if k.startswith("LAKEHOOK_")}
    given["LAKEHOOK_WEBHOOK_TOKEN"] = "x" * 32
    given["LAKEHOOK_SIGNING_KEY"] = "k" * 64
    settings = Settings.load(environ=given)
    settings.check_serving()  # 0.0.0.0 with a 32-character token is allowed
    with pytest.raises(ConfigError, match="not a loopback"):
        Settings.load(environ={**given, "LAKEHOOK_WEBHOOK_TOKEN": "short"}).check_serving()


def test_no_default_secret_in_the_file() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "lakehook-dev-token" not in text
    assert Settings().webhook_token not in text


def test_trino_catalog_matches_the_local_stack(compose: dict[str, Any]) -> None:
    s = Settings()
    catalog = ROOT / "docker" / "trino" / "catalog" / f"{s.trino_catalog}.properties"
    props = dict(line.split("=", 1) for line in catalog.read_text().splitlines() if "=" in line)
    assert props["connector.name"] == "hive"
    assert props["hive.non-managed-table-writes-enabled"] == "true"
    assert props["s3.path-style-access"] == "true"
    assert props["s3.aws-access-key"] == s.lakefs_access_key_id
    assert props["s3.aws-secret-key"] == s.lakefs_secret_access_key
    assert props["hive.metastore.uri"].endswith(f":{s.hms_host_port[1]}")


def test_docker_compose_config_validates(compose: dict[str, Any]) -> None:
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
    ):
        pytest.skip("the docker compose client is not installed")
    result = subprocess.run(
        [docker, "compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
