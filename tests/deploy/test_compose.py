"""docker-compose.yml, Dockerfile, .dockerignore and .env.example, checked statically.

Docker does not run on these machines, so the compose path is validated by reading the files:
every service has a health check, every image is pinned, ports are published on 127.0.0.1 only,
secrets have no defaults, every variable is documented, and the image runs as a non-root user.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from trading_helper.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}, $VAR (not $$VAR)
_BRACED = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
_BARE = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")
_SECRET = re.compile(r"PASSWORD|SECRET|TOKEN")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def documented() -> set[str]:
    """Variables with a line ``VAR=...`` (or a commented ``# VAR=...``) in .env.example."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))


def references(text: str) -> list[tuple[str, str, str]]:
    """(name, operator, default-or-message) of every variable compose interpolates in ``text``."""
    found = [(m.group(1), m.group(2) or "", m.group(3) or "") for m in _BRACED.finditer(text)]
    found += [(m.group(1), "", "") for m in _BARE.finditer(_BRACED.sub("", text))]
    return found


def strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


SCALE = {
    "pgbouncer",
    "collector-1",
    "collector-2",
    "writer-1",
    "writer-2",
    "api-replica-1",
    "api-replica-2",
    "lb",
}
NGINX = ROOT / "deploy" / "nginx.conf"


def profiled(compose: dict[str, Any], profile: str | None) -> set[str]:
    """The services of ``profile`` (None: those without a profile, which always start)."""
    return {
        name
        for name, service in compose["services"].items()
        if ((profile in service.get("profiles", [])) if profile else not service.get("profiles"))
    }


def test_the_specification_services_are_there(compose: dict[str, Any]) -> None:
    assert profiled(compose, None) == {"timescaledb", "redis", "api", "grafana"}
    assert profiled(compose, "scale") == SCALE
    assert set(compose["services"]) == profiled(compose, None) | SCALE
    assert "version" not in compose  # obsolete in the compose specification


def test_every_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_every_image_is_pinned_to_a_version(compose: dict[str, Any]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for name, service in compose["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and not tag.startswith("latest") and re.search(r"\d", tag), f"{name}: {image}"
        if "build" in service:
            assert tag == project["version"], f"{name}: the built image is tagged with the package version"
    ts_tag = compose["services"]["timescaledb"]["image"].rpartition(":")[2]
    version = tuple(int(p) for p in re.match(r"(\d+)\.(\d+)\.(\d+)", ts_tag).groups())  # type: ignore[union-attr]
    assert version >= (2, 25, 2), "TimescaleDB before 2.25.2 ignored the origin in refresh windows"


def test_the_database_health_check_includes_the_job_scheduler(compose: dict[str, Any]) -> None:
    check = " ".join(compose["services"]["timescaledb"]["healthcheck"]["test"])
    assert "pg_isready" in check and "pg_stat_activity" in check
    assert "TimescaleDB Background Worker Launcher" in check
    assert "grep -qv '^0$$'" in check  # unhealthy when no launcher runs ($$: compose's escaped $)
    note = COMPOSE.read_text().split("image: timescale/timescaledb")[0]
    assert "could NOT be checked" in note and "job_status" in note  # what was and was not verified


def test_ports_are_published_on_localhost_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port}"


def test_every_variable_is_documented(compose: dict[str, Any]) -> None:
    names = {name for name, _, _ in references(COMPOSE.read_text())}
    assert names, "the compose file reads no variables?"
    assert names <= documented(), f"not in .env.example: {sorted(names - documented())}"


def test_secrets_have_no_default(compose: dict[str, Any]) -> None:
    for name, operator, default in references(COMPOSE.read_text()):
        if _SECRET.search(name):
            assert operator in ("", ":?", "?", ":-") and not (operator == ":-" and default), (
                f"{name} has a default ({default!r}): a shared default password is a public one"
            )
    required = {name for name, operator, _ in references(COMPOSE.read_text()) if operator == ":?"}
    assert {
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "GRAFANA_DB_PASSWORD",
        "API_TOKEN",
    } <= required
    example = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))
    assert all(example[name] == "" for name in required), "the example must not ship usable secrets"


def test_redis_persists_with_aof(compose: dict[str, Any]) -> None:
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    assert "/data" in " ".join(compose["services"]["redis"]["volumes"])


def test_the_application_migrates_before_serving(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    command = " ".join(api["command"])
    assert command.index("trading-helper db migrate") < command.index("trading-helper serve")
    assert "&&" in command  # a failed migration never serves on a half-made schema
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            assert "docker-entrypoint-initdb.d" not in volume
    assert api["depends_on"]["timescaledb"]["condition"] == "service_healthy"
    assert compose["services"]["grafana"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_grafana_gets_what_its_provisioning_reads(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    assert (provisioning / "datasources").is_dir() and (provisioning / "dashboards").is_dir()
    assert (ROOT / mounts["/etc/grafana/dashboards"] / "market_overview.json").is_file()
    # Grafana expands variables in the parsed values (comments are not read)
    needed = {
        name
        for f in provisioning.rglob("*.yml")
        for value in strings(yaml.safe_load(f.read_text()))
        for name, _, _ in references(value)
    }
    assert needed <= set(grafana["environment"]), (
        f"Grafana lacks {sorted(needed - set(grafana['environment']))}"
    )
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (
        home.startswith("/etc/grafana/dashboards/")
        and (ROOT / mounts["/etc/grafana/dashboards"] / Path(home).name).is_file()
    )


def test_the_api_container_gets_every_setting(compose: dict[str, Any]) -> None:
    for name in (
        "api",
        "collector-1",
        "collector-2",
        "writer-1",
        "writer-2",
        "api-replica-1",
        "api-replica-2",
    ):
        given = set(compose["services"][name]["environment"])
        assert set(Settings.model_fields) <= given, (
            f"not passed to {name}: {sorted(set(Settings.model_fields) - given)}"
        )


def test_the_scale_profile_runs_collectors_writers_and_replicas_behind_a_balancer(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    commands = {name: " ".join(services[name]["command"]) for name in SCALE - {"pgbouncer", "lb"}}
    assert commands == {
        "collector-1": "trading-helper collect",
        "collector-2": "trading-helper collect",
        "writer-1": "trading-helper write",
        "writer-2": "trading-helper write",
        "api-replica-1": "trading-helper serve --no-ingest",
        "api-replica-2": "trading-helper serve --no-ingest",
    }
    # the one-box api runs the ingest unless told not to (the scale profile's collectors do it)
    api_command = " ".join(services["api"]["command"])
    assert "trading-helper serve ${SERVE_INGEST:---ingest}" in api_command
    assert "SERVE_INGEST=--no-ingest" in COMPOSE.read_text().split("services:")[0]
    # the schema is migrated once, by api, before any of them starts
    for name in commands:
        assert services[name]["depends_on"]["api"]["condition"] == "service_healthy", name
    # the replicas go through pgBouncer in transaction pooling, and past it where session state is
    bouncer = services["pgbouncer"]["environment"]
    assert bouncer["POOL_MODE"] == "transaction" and bouncer["DB_HOST"] == "timescaledb"
    for name in ("api-replica-1", "api-replica-2"):
        env = services[name]["environment"]
        assert f"@pgbouncer:{bouncer['LISTEN_PORT']}/" in env["DATABASE_URL"] and env["PGBOUNCER"] == "true"
        assert "@timescaledb:5432/" in env["DIRECT_DATABASE_URL"]
        assert services[name]["depends_on"]["pgbouncer"]["condition"] == "service_healthy"
    for name in ("api", "collector-1", "writer-1"):
        env = services[name]["environment"]
        assert "@timescaledb:5432/" in env["DATABASE_URL"] and env["PGBOUNCER"] == "false", name
    # the balancer: exactly the replicas, on the port they listen on, WebSocket upgrades passed on
    lb = services["lb"]
    assert "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in lb["volumes"]
    conf = NGINX.read_text()
    upstream = re.search(r"upstream api_replicas \{(.*?)\}", conf, flags=re.DOTALL)
    assert upstream is not None
    servers = re.findall(r"^\s*server\s+([\w-]+):(\d+)", upstream.group(1), flags=re.MULTILINE)
    assert sorted(servers) == [("api-replica-1", "8000"), ("api-replica-2", "8000")]
    assert services["api-replica-1"]["environment"]["API_PORT"] == "8000"
    listen = re.search(r"^\s*listen\s+(\d+);", conf, flags=re.MULTILINE)
    assert listen is not None and lb["ports"] == [f"127.0.0.1:${{LB_HOST_PORT:-8080}}:{listen.group(1)}"]
    ws = conf[conf.index("location /api/ws/") :]
    ws = ws[: ws.index("}")]
    assert "proxy_set_header Upgrade $http_upgrade;" in ws and "$connection_upgrade" in ws
    assert conf.count("proxy_pass http://api_replicas;") == 2
    assert {"api-replica-1", "api-replica-2"} == set(lb["depends_on"])


def test_every_setting_is_documented_and_the_example_is_valid() -> None:
    fields = set(Settings.model_fields)
    assert fields <= documented(), f"settings missing from .env.example: {sorted(fields - documented())}"
    settings = Settings(_env_file=str(ENV_EXAMPLE))  # type: ignore[call-arg]
    assert settings.BROKER == "kite" and settings.API_PORT == 8000


def test_dockerfile_is_small_and_runs_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.MULTILINE | re.IGNORECASE)
    assert len(stages) >= 2, "multi-stage: build tools stay out of the runtime image"
    for image, _ in stages:
        assert ":" in image and not image.endswith(":latest") and "slim" in image, image
    final = text[text.rindex("\nFROM") :]
    users = re.findall(r"^USER\s+(\S+)", final, flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0"), (
        "the runtime stage must switch to a non-root user"
    )
    assert not re.search(r"^ADD\s+https?://", text, flags=re.MULTILINE)
    assert re.search(r"^EXPOSE\s+8000", text, flags=re.MULTILINE)
    assert "trading-helper db migrate" in final


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    ignored = set(DOCKERIGNORE.read_text().split())
    assert {".env", ".git", ".venv", "node_modules", "var"} <= ignored
