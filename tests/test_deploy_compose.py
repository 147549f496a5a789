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
    assert re.search(r"^RUN pip install /src\b", text, re.M)
    assert re.search(r'^ENTRYPOINT \["cdiwatch"\]', text, re.M)
    assert "CDI_WEB_HOST=0.0.0.0" in text
    for src in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (ROOT / src).exists(), src
    # the context filter keeps what `pip install` needs
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    for needed in ("!pyproject.toml", "!pipeline/**", "!README.md"):
        assert needed in ignore
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


def test_host_ports_unique(services):
    seen: dict[str, str] = {}
    for name, s in services.items():
        for p in s.get("ports", []):
            host = str(p).split(":")[0]
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
