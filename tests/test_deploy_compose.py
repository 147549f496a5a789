"""docker-compose.yml and deploy/Dockerfile (issue 4).

No Docker engine runs here, so the compose file is parsed and its references
checked: mounted files exist and land where the configs expect them, every
host name used by prometheus.yml, alertmanager.yml and the Grafana datasource
is a compose service listening on that port, build contexts and the
Dockerfile exist, host ports do not clash.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def command_of(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def flag(args: list[str], name: str, default: str | None = None) -> str | None:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    out = []
    for v in service.get("volumes", []):
        src, dst = v.split(":")[:2]
        if src.startswith("."):
            out.append((src, dst))
    return out


def container_port(services: dict, host: str, port: int) -> bool:
    """Does compose service ``host`` listen on ``port`` inside the network?"""
    svc = services[host]
    args = command_of(svc)
    if "worker" in args:
        return port == int(flag(args, "--web-port", "6066"))
    if host == "alertmanager":
        return port == 9093
    if host == "prometheus":
        return port == 9090
    if host == "alert-sink":
        return port == int(flag(args, "--port", "9095"))
    if host == "kafka":
        return f"://:{port}" in svc["environment"]["KAFKA_LISTENERS"]
    return False


def test_services_present(services):
    assert {"kafka", "worker-1", "worker-2", "prometheus", "alertmanager", "grafana", "feeder"} <= set(services)


def test_kafka_is_official_image_in_kraft_mode(services):
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
    assert not any("ZOOKEEPER" in k for k in env)
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "healthcheck" in kafka


def test_two_workers_built_from_the_dockerfile(services):
    workers = [name for name, s in services.items() if "worker" in command_of(s)]
    assert len(workers) == 2
    for name in workers:
        s = services[name]
        context = ROOT / s["build"]["context"]
        assert context.is_dir()
        assert (context / s["build"]["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()
        args = command_of(s)
        assert flag(args, "--broker") == "kafka://kafka:9092"
        assert s["environment"]["CDI_WEB_HOST"] == "0.0.0.0"
        assert s["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_dockerfile(services):
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    # the wheel is built (with its compiled core) in a stage with a compiler, then installed
    assert re.search(r"^FROM python:3\.11 AS build\b", text, re.M)
    assert re.search(r"^RUN pip wheel --no-deps --wheel-dir /wheels /src\b", text, re.M)
    assert re.search(r"^COPY --from=build /wheels /wheels\b", text, re.M)
    assert re.search(r"^RUN pip install /wheels/\*\.whl\b", text, re.M)
    assert re.search(r'^ENTRYPOINT \["cdiwatch"\]', text, re.M)
    assert "CDI_WEB_HOST=0.0.0.0" in text
    for src in re.findall(r"^COPY (?!--from=)(\S+) ", text, re.M):
        assert (ROOT / src).exists(), src
    # the context filter keeps what `pip install` needs
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    for needed in ("!pyproject.toml", "!setup.py", "!pipeline/**", "!README.md"):
        assert needed in ignore
    for kept_out in ("**/*.so", "pipeline/native.manifest"):  # a checkout's own build never enters the image
        assert kept_out in ignore
    assert (ROOT / "pyproject.toml").exists() and (ROOT / "pipeline" / "__main__.py").exists()


def test_feeder_replays_into_kafka(services):
    feeder = services["feeder"]
    script = " ".join(command_of(feeder))
    assert "cdiwatch simulate" in script and "cdiwatch replay -" in script
    assert "--broker kafka://kafka:9092" in script
    assert feeder["build"]["dockerfile"] == "deploy/Dockerfile"


def test_bind_mounts_exist(services):
    for name, s in services.items():
        for src, _dst in bind_mounts(s):
            assert (ROOT / src).exists(), f"{name}: {src} does not exist"


def test_named_volumes_declared_and_depends_on_known(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, s in services.items():
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if not src.startswith((".", "/")):
                assert src in declared, f"{name}: volume {src} not declared"
        deps = s.get("depends_on") or []
        for dep in deps:
            assert dep in services, f"{name} depends on unknown {dep}"


def published(port) -> tuple[str | None, str, str]:
    """(host address or None, host port, container port) of a short-syntax ``ports`` entry."""
    parts = str(port).split(":")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:
        return None, parts[0], parts[1]
    return None, parts[0], parts[0]


def test_host_ports_unique(services):
    seen: dict[str, str] = {}
    for name, s in services.items():
        for p in s.get("ports", []):
            _address, host, _container = published(p)
            assert host not in seen, f"{name} and {seen[host]} both publish {host}"
            seen[host] = name


def test_prometheus_mounts_config_and_rules_where_it_reads_them(services):
    prom = services["prometheus"]
    cfg_path = PurePosixPath(flag(command_of(prom), "--config.file"))
    mounts = dict((dst, src) for src, dst in bind_mounts(prom))
    assert (ROOT / mounts[str(cfg_path)]).resolve() == (DEPLOY / "prometheus" / "prometheus.yml").resolve()
    cfg = load(DEPLOY / "prometheus" / "prometheus.yml")
    for pattern in cfg["rule_files"]:  # rule_files are relative to the config file
        rules_dir = str(cfg_path.parent / PurePosixPath(pattern).parent)
        assert rules_dir in mounts, f"{rules_dir} not mounted"
        assert list((ROOT / mounts[rules_dir]).glob(PurePosixPath(pattern).name))


def test_prometheus_targets_are_compose_services(services):
    cfg = load(DEPLOY / "prometheus" / "prometheus.yml")
    targets = [t for job in cfg["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    targets += [t for am in cfg["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    for target in targets:
        host, port = target.rsplit(":", 1)
        if host == "localhost":
            continue
        assert host in services, f"prometheus.yml target {target}: no compose service {host}"
        assert container_port(services, host, int(port)), f"{host} does not listen on {port}"
    [job] = [j for j in cfg["scrape_configs"] if j["job_name"] == "cdiwatch"]
    scraped = {t.rsplit(":", 1)[0] for sc in job["static_configs"] for t in sc["targets"]}
    workers = {n for n, s in services.items() if "worker" in command_of(s)}
    assert scraped == workers, "scrape every worker replica, and only them"


def test_alertmanager_mount_and_webhooks(services):
    am = services["alertmanager"]
    cfg_path = flag(command_of(am), "--config.file")
    mounts = dict((dst, src) for src, dst in bind_mounts(am))
    assert (ROOT / mounts[cfg_path]).resolve() == (DEPLOY / "alertmanager" / "alertmanager.yml").resolve()
    cfg = load(DEPLOY / "alertmanager" / "alertmanager.yml")
    for receiver in cfg["receivers"]:
        for hook in receiver["webhook_configs"]:
            url = urlparse(hook["url"])
            assert url.hostname in services, hook["url"]
            assert container_port(services, url.hostname, url.port), hook["url"]
    sink = services["alert-sink"]
    [(src, dst)] = bind_mounts(sink)
    assert (ROOT / src).resolve() == (DEPLOY / "alertmanager" / "alert_sink.py").resolve()
    assert dst in command_of(sink)


def test_grafana_provisioning_mounts(services):
    g = services["grafana"]
    mounts = dict((dst, src) for src, dst in bind_mounts(g))
    assert (ROOT / mounts["/etc/grafana/provisioning"]).resolve() == (DEPLOY / "grafana" / "provisioning").resolve()
    provider = load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "cdiwatch.yml")["providers"][0]
    dash_dir = provider["options"]["path"]
    assert dash_dir in mounts, "the dashboard provider's folder is not mounted"
    assert list((ROOT / mounts[dash_dir]).glob("*.json"))
    home = g["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dash_dir + "/") and (ROOT / mounts[dash_dir] / PurePosixPath(home).name).exists()
    ds = load(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    url = urlparse(ds["url"])
    assert url.hostname in services and container_port(services, url.hostname, url.port)


# ----------------------------------------------------------------- security of the stack (issue 10)

SECRET_DIR = "/run/secrets/"


def secret_names(service: dict) -> set[str]:
    return {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}


def test_every_host_port_is_bound_to_loopback(services):
    for name, s in services.items():
        for p in s.get("ports", []):
            assert isinstance(p, str), f"{name}: use the short syntax 127.0.0.1:HOST:CONTAINER"
            address, _host, _container = published(p)
            assert address == "127.0.0.1", f"{name} publishes {p} beyond the host's loopback"


def test_no_secret_value_in_any_environment(compose, services):
    for name, s in services.items():
        for key, value in (s.get("environment") or {}).items():
            if re.search(r"(PASSWORD|TOKEN|SECRET|CREDENTIALS)$", key):
                raise AssertionError(f"{name}: {key} holds a secret value; use {key}_FILE / a compose secret")
            if key.endswith("_FILE") and re.search(r"PASSWORD|TOKEN", key):
                assert str(value).startswith(SECRET_DIR), f"{name}: {key}={value} is not a compose secret"
                assert PurePosixPath(value).name in secret_names(s), f"{name}: secret {value} not given to it"


def test_secrets_are_files_made_by_the_script(compose, services, tmp_path):
    import subprocess

    declared = compose["secrets"]
    used = set().union(*(secret_names(s) for s in services.values()))
    assert used == set(declared), "every declared secret is used, every used secret declared"
    for name, spec in declared.items():
        assert spec["file"] == f"./secrets/{name}", name
    assert "/secrets/" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    subprocess.run(["sh", str(DEPLOY / "make-secrets.sh"), str(tmp_path / "s")], check=True, capture_output=True)
    assert {p.name for p in (tmp_path / "s").iterdir()} >= set(declared)
    before = {p.name: p.read_text() for p in (tmp_path / "s").iterdir()}
    subprocess.run(["sh", str(DEPLOY / "make-secrets.sh"), str(tmp_path / "s")], check=True, capture_output=True)
    assert before == {p.name: p.read_text() for p in (tmp_path / "s").iterdir()}, "re-running changed a secret"


def worker_settings(service: dict, secrets_dir: Path):
    """The worker's Settings from its compose environment, secrets read from ``secrets_dir``."""
    from pipeline.settings import Settings

    values = {}
    for key, value in service["environment"].items():
        value = str(value)
        if value.startswith(SECRET_DIR):
            value = str(secrets_dir / PurePosixPath(value).name)
        values[key.removeprefix("CDI_").lower()] = value
    args = command_of(service)
    values["broker"] = flag(args, "--broker")
    values["web_port"] = flag(args, "--web-port")
    return Settings(**values)


def test_workers_listen_on_the_network_with_the_token_and_kafka_credentials(services, tmp_path):
    import subprocess

    from pipeline.commands.worker import preflight

    secrets_dir = tmp_path / "secrets"
    subprocess.run(["sh", str(DEPLOY / "make-secrets.sh"), str(secrets_dir)], check=True, capture_output=True)
    workers = [s for s in services.values() if "worker" in command_of(s)]
    kafka = services["kafka"]["environment"]
    jaas = (secrets_dir / "kafka_server_jaas.conf").read_text()
    for s in workers:
        env = s["environment"]
        assert str(env.get("CDI_HTTP_ALLOW_ANONYMOUS", "false")).lower() == "false"
        settings = worker_settings(s, secrets_dir)
        assert not settings.web_loopback and settings.http_token is not None
        assert settings.http_token.get_secret_value() == (secrets_dir / "cdiwatch_http_token").read_text().strip()
        preflight_ok = settings.with_overrides(web_port=1)  # the port check must not see this host's ports
        try:
            preflight(preflight_ok)
        except Exception as exc:  # noqa: BLE001 - only the busy-port line is acceptable here
            assert "already in use" in str(exc), exc
        # the Kafka login the broker knows
        assert settings.kafka_security_protocol == "SASL_PLAINTEXT"
        assert settings.kafka_sasl_mechanism in kafka["KAFKA_SASL_ENABLED_MECHANISMS"].split(",")
        password = settings.kafka_sasl_password.get_secret_value()
        assert f'user_{settings.kafka_sasl_username}="{password}"' in jaas
    assert "SASL_PLAINTEXT://kafka:9092" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert "/run/secrets/kafka_server_jaas.conf" in kafka["KAFKA_OPTS"]
    assert "kafka_server_jaas.conf" in secret_names(services["kafka"])
    assert "--command-config /run/secrets/kafka_admin.properties" in " ".join(services["kafka"]["healthcheck"]["test"])
    feeder = services["feeder"]
    assert feeder["environment"]["CDI_KAFKA_SASL_PASSWORD_FILE"] == "/run/secrets/kafka_cdiwatch_password"
    assert "kafka_cdiwatch_password" in secret_names(feeder)


def test_prometheus_has_no_lifecycle_api_and_reads_the_token_secret(services):
    prom = services["prometheus"]
    assert not any("web.enable-lifecycle" in a or "web.enable-admin-api" in a for a in command_of(prom))
    cfg = load(DEPLOY / "prometheus" / "prometheus.yml")
    [job] = [j for j in cfg["scrape_configs"] if j["job_name"] == "cdiwatch"]
    path = job["authorization"]["credentials_file"]
    assert path.startswith(SECRET_DIR) and PurePosixPath(path).name in secret_names(prom)
    token_of_workers = {PurePosixPath(s["environment"]["CDI_HTTP_TOKEN_FILE"]).name
                        for s in services.values() if "worker" in command_of(s)}
    assert token_of_workers == {PurePosixPath(path).name}, "Prometheus must send the workers' token"


def test_grafana_has_no_anonymous_access_and_a_secret_admin_password(services):
    g = services["grafana"]
    env = {k: str(v) for k, v in g["environment"].items()}
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env and "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    path = env["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    assert path.startswith(SECRET_DIR) and PurePosixPath(path).name in secret_names(g)
    assert env.get("GF_USERS_ALLOW_SIGN_UP") == "false"
