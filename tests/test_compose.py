"""docker-compose.yml, Dockerfile, .dockerignore and .env.example: the deployment's security properties.

The compose file is resolved by every Compose implementation found (Docker Compose v2 as
``docker compose``, docker-compose 1.29 as ``docker-compose``); neither needs a Docker engine for
``config``. The resolved YAML is then checked: only the API publishes a port, on 127.0.0.1 by
default; Ray token auth on every Ray container and the API; trials never on the head; GPUs
reserved for workers; one image; Postgres healthy and persistent. Without any Compose the
compose tests skip (Debian/Ubuntu: ``apt-get install docker-compose``); the static checks of the
Dockerfile and the ignore file always run. No image is built here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
RAY_TOKEN = "0123456789abcdef" * 4
API_TOKEN = "fedcba9876543210" * 4


def _implementations() -> list[list[str]]:
    """The Compose commands available here: v2 (`docker compose`) and/or v1 (`docker-compose`)."""
    found = []
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            found.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        found.append(["docker-compose"])
    return found


IMPLEMENTATIONS = _implementations()
NO_COMPOSE = (
    "no Compose implementation: neither `docker compose` (v2 plugin) nor `docker-compose` (1.29, "
    "Debian package docker-compose) is installed"
)


@pytest.fixture(params=IMPLEMENTATIONS or [None], ids=lambda c: " ".join(c) if c else "none")
def compose(request):
    if request.param is None:
        pytest.skip(NO_COMPOSE)
    return request.param


def _config(
    compose_cmd, tmp_path, env_file_text: str | None = None, **variables
) -> subprocess.CompletedProcess:
    """`compose config` with exactly these variables: the caller's environment and any .env are ignored."""
    env_file = tmp_path / "test.env"
    env_file.write_text(env_file_text or "")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAY_", "LODOTUNE_", "POSTGRES_", "COMPOSE_"))
    }
    env.update(variables)
    command = [
        *compose_cmd,
        "--project-directory",
        str(ROOT),
        "--env-file",
        str(env_file),
        "-f",
        str(COMPOSE_FILE),
        "config",
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def _resolved(compose_cmd, tmp_path, **variables) -> dict:
    variables = {"RAY_AUTH_TOKEN": RAY_TOKEN, "LODOTUNE_API_TOKEN": API_TOKEN, **variables}
    result = _config(compose_cmd, tmp_path, **variables)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture
def resolved(compose, tmp_path) -> dict:
    return _resolved(compose, tmp_path)


def _ports(service: dict) -> list[tuple[str, str, str]]:
    """(host_ip, published, target) of each published port, from the short (v1) or long (v2) syntax."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append((port.get("host_ip") or "", str(port.get("published", "")), str(port["target"])))
            continue
        parts = str(port).split("/")[0].rsplit(":", 2)
        if len(parts) == 1:
            out.append(("", "", parts[0]))
        elif len(parts) == 2:
            out.append(("", parts[0], parts[1]))
        else:
            out.append((parts[0], parts[1], parts[2]))
    return out


def _command(service: dict) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _ray_services(config: dict) -> dict[str, dict]:
    return {name: s for name, s in config["services"].items() if _command(s)[:2] == ["ray", "start"]}


def _volume_targets(service: dict) -> dict[str, str]:
    """Container path -> source, from the short or the long volume syntax."""
    out = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            out[volume["target"]] = volume.get("source", "")
        else:
            source, target = str(volume).split(":")[:2]
            out[target] = source
    return out


def test_services_present(resolved):
    services = resolved["services"]
    assert {"ray-head", "ray-worker", "api", "postgres"} <= set(services)
    assert set(_ray_services(resolved)) >= {"ray-head", "ray-worker"}


def test_only_api_publishes_a_port_and_on_loopback_by_default(resolved):
    published = {name: _ports(s) for name, s in resolved["services"].items() if s.get("ports")}
    assert set(published) == {"api"}, f"services publishing ports: {published}"
    assert published["api"] == [("127.0.0.1", "8000", "8000")]
    head = resolved["services"]["ray-head"]
    assert {str(p) for p in head.get("expose", [])} >= {"6379", "8265"}


def test_api_publish_address_is_overridable(compose, tmp_path):
    config = _resolved(compose, tmp_path, LODOTUNE_PUBLISH="10.1.2.3:8080")
    assert _ports(config["services"]["api"]) == [("10.1.2.3", "8080", "8000")]


def test_ray_token_auth_everywhere(resolved):
    services = resolved["services"]
    for name in [*_ray_services(resolved), "api"]:
        env = _environment(services[name])
        assert env.get("RAY_AUTH_MODE") == "token", name
        assert env.get("RAY_AUTH_TOKEN") == RAY_TOKEN, name
    # The Jobs client's address would be overridden by a stray RAY_ADDRESS.
    assert "RAY_ADDRESS" not in _environment(services["api"])


@pytest.mark.parametrize("missing", ["RAY_AUTH_TOKEN", "LODOTUNE_API_TOKEN"])
def test_refuses_to_start_without_a_token(compose, tmp_path, missing):
    variables = {"RAY_AUTH_TOKEN": RAY_TOKEN, "LODOTUNE_API_TOKEN": API_TOKEN, missing: ""}
    result = _config(compose, tmp_path, **variables)
    assert result.returncode != 0
    assert missing in result.stderr


def test_env_example_names_every_required_variable(compose, tmp_path):
    text = (ROOT / ".env.example").read_text()
    # As shipped the tokens are empty, so compose refuses it until they are filled in.
    assert _config(compose, tmp_path, env_file_text=text).returncode != 0
    filled = re.sub(r"^RAY_AUTH_TOKEN=$", f"RAY_AUTH_TOKEN={RAY_TOKEN}", text, flags=re.M)
    filled = re.sub(r"^LODOTUNE_API_TOKEN=$", f"LODOTUNE_API_TOKEN={API_TOKEN}", filled, flags=re.M)
    result = _config(compose, tmp_path, env_file_text=filled)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert _environment(config["services"]["ray-head"])["RAY_AUTH_TOKEN"] == RAY_TOKEN
    assert _environment(config["services"]["api"])["LODOTUNE_API_TOKEN"] == API_TOKEN


def test_head_runs_no_trials_and_is_health_checked(resolved):
    head = resolved["services"]["ray-head"]
    command = _command(head)
    for flag in ("--head", "--port=6379", "--dashboard-host=0.0.0.0", "--dashboard-port=8265"):
        assert flag in command
    assert "--num-cpus=0" in command and "--num-gpus=0" in command and "--block" in command
    assert "container_name" not in head
    assert head.get("shm_size")
    test = " ".join(head["healthcheck"]["test"])
    assert "/api/version" in test and "Authorization" in test and "RAY_AUTH_TOKEN" in test


def test_workers_reserve_gpus_and_scale(resolved):
    worker = resolved["services"]["ray-worker"]
    command = _command(worker)
    assert command[:2] == ["ray", "start"] and "--address=ray-head:6379" in command and "--block" in command
    assert "container_name" not in worker, "a container_name prevents --scale"
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert worker.get("shm_size")
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_one_image_for_ray_and_api(resolved):
    services = resolved["services"]
    users = [*_ray_services(resolved), "api"]
    images = {services[name]["image"] for name in users}
    assert len(images) == 1, images
    for name in users:
        build = services[name].get("build")
        if build:
            assert Path(build["context"] if isinstance(build, dict) else build).resolve() == ROOT


def test_api_settings_and_dependencies(resolved):
    api = resolved["services"]["api"]
    assert _command(api) == ["lodotune", "serve", "--host", "0.0.0.0", "--port", "8000"]
    env = _environment(api)
    assert env["LODOTUNE_LAUNCHER"] == "ray-jobs"
    assert env["LODOTUNE_RAY_ADDRESS"] == "http://ray-head:8265"
    assert env["LODOTUNE_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in env["LODOTUNE_DATABASE_URL"]
    assert env["LODOTUNE_API_TOKEN"] == API_TOKEN
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_artifacts_and_data_shared_at_the_same_path(resolved):
    services = resolved["services"]
    for name in [*_ray_services(resolved), "api"]:
        env = _environment(services[name])
        targets = _volume_targets(services[name])
        artifact_dir, data_dir = env["LODOTUNE_ARTIFACT_DIR"], env["LODOTUNE_DATA_DIR"]
        assert targets.get(artifact_dir) == "artifacts", name
        assert data_dir in targets, name
    assert "artifacts" in resolved["volumes"]


def test_postgres_private_healthy_persistent(resolved):
    postgres = resolved["services"]["postgres"]
    assert re.fullmatch(r"postgres:\d+(\.\d+)?(-[a-z0-9]+)?", postgres["image"]), "pin the major version"
    assert not postgres.get("ports")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    sources = set(_volume_targets(postgres).values())
    assert sources & set(resolved["volumes"]), "the database needs a named volume"


# Static checks that need no Compose.


def _pin(package: str) -> str:
    match = re.search(rf"^{package}==(\S+)$", (ROOT / "constraints.txt").read_text(), flags=re.M)
    assert match, f"{package} is not pinned in constraints.txt"
    return match.group(1)


def test_dockerfile_pins_from_constraints_and_drops_root():
    text = (ROOT / "Dockerfile").read_text()
    instructions = [
        line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "pip install -c constraints.txt ." in text
    assert "COPY constraints.txt" in text
    # Versions come from constraints.txt (torch==2.13.0, ray==2.60.0), never typed into the Dockerfile.
    assert _pin("torch") and _pin("ray")
    assert not re.search(r"\b(torch|ray)(\[[^\]]*\])?==\d", "\n".join(instructions))
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root user"


def test_dockerignore_keeps_secrets_and_bulk_out():
    patterns = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for needed in (".git", ".venv", ".env", "runs", "artifacts", "data", "bench/results"):
        assert needed in patterns, needed
