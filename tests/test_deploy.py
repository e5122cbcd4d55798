"""deploy/k8s against the code it deploys: the HTTPRoute sends each route of the three apps, method by method,
to the app that serves it; drain and timeout figures follow the settings; probes hit real routes.
(`make deploy-check` renders the overlays and validates them with kustomize, kubernetes-validate and checkov.)"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from attachd_client import AsyncClient, Target
from services import cli
from services.compat import app as compat_app
from services.console import app as console_app
from services.core.settings import KNOWN_VARIABLES, Settings
from services.embedded import free_port
from services.ingress import app as ingress_app
from services.query import app as query_app
from services.web import openapi
from services.web.http import base_app, reached_by

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
BACKENDS = {"ingress": "attachd-ingress", "query": "attachd-query", "compat": "attachd-compat"}
SAMPLES = {
    "id": str(uuid.UUID(int=7)),
    "variant": "thumbnail",
    "token": "tok-1",
    "type": "Ticket",
    "field": "files",
    "name": "swagger-ui.css",
}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(kind: str, name: str, where: Path = K8S) -> dict[str, Any]:
    for path in sorted(where.rglob("*.yaml")):
        for doc in documents(path):
            if doc.get("kind") == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind} {name} under {where}")


def app_routes(add_routes) -> list[tuple[str, str]]:
    """(method, a concrete path) for every route ``add_routes`` adds, HEAD included where aiohttp adds it."""
    app = web.Application()
    add_routes(app)
    out = []
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource else ""
        path = re.sub(r"\{(\w+)\}", lambda m: SAMPLES.get(m[1], "x"), canonical)
        out.append((route.method, path))
    return out


def path_matches(match: dict[str, Any], path: str) -> int | None:
    """How specific the match is for ``path`` (None: no match), by the Gateway API's rules: an Exact path
    beats any prefix, a longer prefix beats a shorter one; a PathPrefix matches whole path elements."""
    kind, value = match["path"]["type"], match["path"]["value"]
    if kind == "Exact":
        return 1_000_000 if path == value else None
    assert kind == "PathPrefix", kind
    prefix = value.rstrip("/")
    if path == prefix or path.startswith(prefix + "/"):
        return len(prefix)
    return None


def route_to(route: dict[str, Any], method: str, path: str) -> str | None:
    """The Service the HTTPRoute sends ``method path`` to, or None (the gateway's 404)."""
    best: tuple[int, int, str] | None = None
    for rule in route["spec"]["rules"]:
        for match in rule["matches"]:
            if match.get("method", method) != method:
                continue
            specificity = path_matches(match, path)
            if specificity is None:
                continue
            rank = (specificity, 1 if "method" in match else 0, rule["backendRefs"][0]["name"])
            if best is None or rank[:2] > best[:2]:
                best = rank
            elif rank[:2] == best[:2] and rank[2] != best[2]:
                raise AssertionError(f"{method} {path}: two rules of equal precedence disagree")
    return best[2] if best else None


HTTPROUTE = find("HTTPRoute", "attachd")
ROUTES = (
    [("ingress", m, p) for m, p in app_routes(ingress_app.add_routes)]
    + [("query", m, p) for m, p in app_routes(query_app.add_routes)]
    + [("compat", m, p) for m, p in app_routes(compat_app.add_routes)]
    + [("ingress", m, p) for m, p in app_routes(console_app.add_routes)]  # when ATTACHD_CONSOLE is on
)
# /v1/openapi.json and /docs, which both apps serve (services/web/openapi.py): the gateway sends them to reads.
DOCS_ROUTES = [("query", m, p) for m, p in app_routes(openapi.add_routes)]


@pytest.mark.parametrize(
    ("app", "method", "path"), ROUTES + DOCS_ROUTES, ids=[f"{a}:{m} {p}" for a, m, p in ROUTES + DOCS_ROUTES]
)
def test_the_httproute_sends_every_route_to_the_app_that_serves_it(app, method, path):
    assert route_to(HTTPROUTE, method, path) == BACKENDS[app]


def test_every_httproute_match_serves_some_route_and_nothing_else_is_exposed():
    served = {(m, p) for _, m, p in ROUTES + DOCS_ROUTES}
    for rule in HTTPROUTE["spec"]["rules"]:
        for match in rule["matches"]:
            assert any(m == match.get("method", m) and path_matches(match, p) is not None for m, p in served), (
                f"{match} routes nothing the apps serve"
            )
    # The operational routes every process has stay inside the cluster.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert route_to(HTTPROUTE, "GET", path) is None
    # A write to the query service's paths, or a read of the ingress's, is the gateway's 404.
    assert route_to(HTTPROUTE, "POST", f"/v1/attachments/{SAMPLES['id']}") is None
    assert route_to(HTTPROUTE, "GET", "/v1/targets/Ticket/1") is None


def test_the_two_apps_share_no_route():
    """What makes the split by method and path possible."""
    ingress = {(m, p) for a, m, p in ROUTES if a == "ingress"}
    query = {(m, p) for a, m, p in ROUTES if a == "query"}
    assert not ingress & query


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", value)
    assert match, value
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match[2]]


def base_config() -> dict[str, str]:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    (generator,) = [g for g in kustomization["configMapGenerator"] if g["name"] == "attachd-config"]
    return dict(literal.split("=", 1) for literal in generator["literals"])


def setting(name: str, env: dict[str, str]) -> float:
    """A setting as the pod sees it: its container env, else the ConfigMap, else attachd's default."""
    variable = f"ATTACHD_{name.upper()}"
    if variable in env:
        return float(env[variable])
    return float(getattr(Settings(), name))


def test_the_httproute_timeouts_outlast_what_attachd_allows_a_request():
    env = base_config()
    for rule in HTTPROUTE["spec"]["rules"]:
        timeout = seconds(rule["timeouts"]["request"])
        if rule["backendRefs"][0]["name"] in ("attachd-ingress", "attachd-compat"):
            # A write: its body arrives, then it waits for its worker.
            assert timeout > setting("sync_wait_s", env)
            assert timeout > setting("body_read_timeout_s", env) + setting("sync_wait_s", env)
        else:
            assert timeout >= setting("body_read_timeout_s", env)


@pytest.mark.parametrize("part", ["ingress", "query", "compat", "worker"])
def test_drain_timings_follow_the_settings(part):
    deployment = find("Deployment", f"attachd-{part}", K8S / "base")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {**base_config(), **{e["name"]: e["value"] for e in container.get("env", [])}}
    grace = setting("shutdown_grace_s", env)
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    assert pod["terminationGracePeriodSeconds"] > sleep + grace
    if part in ("ingress", "query", "compat"):
        # Served through a Service: the endpoints must drop the pod before it stops listening.
        assert sleep >= 5
    if part in ("ingress", "compat"):
        assert grace >= setting("sync_wait_s", env), "a synchronous write in flight must be answered"
    if part == "worker":
        assert grace >= setting("job_timeout_s", env), "a running job must be able to finish"


@pytest.mark.parametrize("part", ["ingress", "query", "compat", "worker"])
def test_probes_hit_the_routes_the_part_serves_on_the_port_it_listens_on(part):
    pod = find("Deployment", f"attachd-{part}", K8S / "base")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    port = int(container["args"][container["args"].index("--port") + 1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    served = {
        route.resource.canonical
        for route in base_app(part, Settings(jwt_secret="s" * 40)).router.routes()
        if route.resource
    }
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and path in served
        assert ports[get["port"]] == port
    assert [c["args"] for c in pod["initContainers"]] == [["migrate"]]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert base_config()["ATTACHD_TMP_DIR"] == "/tmp"
    assert pod["securityContext"]["runAsNonRoot"] and pod["automountServiceAccountToken"] is False


def attachd_containers(node: Any) -> list[dict[str, Any]]:
    """Every container running the attachd image in ``node`` (a manifest, or a patch's operations)."""
    if isinstance(node, list):
        return [c for item in node for c in attachd_containers(item)]
    if not isinstance(node, dict):
        return []
    here = [node] if node.get("image") == "attachd" and "args" in node else []
    return here + [c for value in node.values() for c in attachd_containers(value)]


def manifest_commands() -> list[list[str]]:
    """The ``attachd`` arguments every deployment runs: the Deployments' containers and init containers (the
    overlays' patches included), compose.yaml's services and the image's HEALTHCHECK."""
    commands = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in documents(path):
            commands += [c["args"] for c in attachd_containers(doc)]
            for patch in doc.get("patches", []):
                commands += [c["args"] for c in attachd_containers(yaml.safe_load(patch["patch"]))]
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    commands += [s["command"] for s in compose["services"].values() if s["image"].startswith("attachd:")]
    healthcheck = re.search(r"^HEALTHCHECK .* CMD (\[.*\])$", (ROOT / "deploy" / "Dockerfile").read_text(), re.M)
    assert healthcheck, "deploy/Dockerfile has a HEALTHCHECK"
    assert yaml.safe_load(healthcheck[1])[0] == "attachd"
    commands.append(yaml.safe_load(healthcheck[1])[1:])
    return commands


def test_every_attachd_command_the_deployments_run_exists_with_those_options():
    commands = manifest_commands()
    assert {c[0] for c in commands} >= {
        "ingress",
        "query",
        "compat",
        "worker",
        "migrate",
        "create-bucket",
        "healthcheck",
    }
    for args in commands:
        parsed = cli.parser().parse_args(args)  # an unknown command or option: SystemExit
        assert parsed.run, args


def test_every_attachd_variable_the_deployments_name_is_one_attachd_reads():
    """A misspelt ATTACHD_* variable is only a warning in the log, and the setting keeps its default."""
    texts = {
        path: path.read_text() for path in [*(ROOT / "deploy").rglob("*"), ROOT / "compose.yaml"] if path.is_file()
    }
    named = {
        (path.relative_to(ROOT), name) for path, text in texts.items() for name in re.findall(r"ATTACHD_\w+", text)
    }
    assert len(named) > 20
    assert {(path, name) for path, name in named if name not in KNOWN_VARIABLES} == set()


def compose_environment() -> dict[str, str]:
    """The settings compose.yaml gives every attachd container."""
    return yaml.safe_load((ROOT / "compose.yaml").read_text())["x-attachd"]["environment"]


async def test_a_tus_upload_stays_on_the_ingress_when_the_public_url_names_the_query_service(make_service, tmp_path):
    """compose.yaml and the dev overlay publish the ingress and the query service on two ports, with
    ATTACHD_PUBLIC_URL on the query service's (where the signed links are served). A tus upload sent to the
    ingress's port must go on there: its upload URL is the ingress's, not the query service's."""
    public_url = compose_environment()["ATTACHD_PUBLIC_URL"]
    dev_overlay = yaml.safe_load((K8S / "overlays" / "dev" / "kustomization.yaml").read_text())
    assert f"ATTACHD_PUBLIC_URL={public_url}" in dev_overlay["configMapGenerator"][0]["literals"]
    big = tmp_path / "survey.log"
    big.write_bytes(b"a line of the survey\n" * 4096)
    async with make_service(public_url=public_url) as svc:
        ingress = str(svc.client.make_url("/"))
        async with AsyncClient(ingress, svc.token(), tus_threshold=1024, chunk_size=32 * 1024) as attachd:
            record = await attachd.upload(big, Target("Task", "42"))
    assert record.size == big.stat().st_size
    assert record.file.original and record.file.original.startswith(f"{public_url}/v1/files/")


async def test_a_tus_upload_url_is_where_the_client_reached_the_ingress(make_service):
    """Through the gateway (the request came by ATTACHD_PUBLIC_URL's host) an upload's URL is on the public URL,
    its path prefix included; reached directly, on the ingress's own address."""
    async with make_service(public_url="https://files.example.com/att") as svc:
        own = str(svc.client.make_url("/")).rstrip("/")
        metadata = "filename YS50eHQ=,target_type VGFzaw==,target_id MQ=="  # a.txt, Task, 1
        created = {"Tus-Resumable": "1.0.0", "Upload-Length": "5", "Upload-Metadata": metadata}
        for host, base in (("files.example.com", "https://files.example.com/att"), (None, own)):
            headers = {**svc.auth(), **created, **({"Host": host} if host else {})}
            async with svc.client.post("/v1/uploads/tus", headers=headers) as resp:
                assert resp.status == 201, await resp.text()
                assert resp.headers["Location"].startswith(f"{base}/v1/uploads/tus/"), resp.headers["Location"]


@pytest.mark.parametrize(
    ("public_url", "scheme", "host", "expected"),
    [
        ("", "http", "127.0.0.1:8082", "http://127.0.0.1:8082"),
        ("http://127.0.0.1:8081", "http", "127.0.0.1:8082", "http://127.0.0.1:8082"),  # compose: another part
        ("http://127.0.0.1:8081/", "http", "127.0.0.1:8081", "http://127.0.0.1:8081"),
        ("https://files.example.com", "http", "files.example.com", "https://files.example.com"),  # the gateway
        ("https://files.example.com", "http", "files.example.com:443", "https://files.example.com"),
        ("https://files.example.com/att", "http", "files.example.com", "https://files.example.com/att"),
        ("https://files.example.com", "http", "files.example.com:8443", "http://files.example.com:8443"),
        ("https://files.example.com", "http", "not a host", "http://not a host"),
    ],
)
def test_links_back_to_a_part_use_the_public_url_only_for_requests_that_came_by_it(public_url, scheme, host, expected):
    assert reached_by(public_url, scheme, host) == expected


async def test_the_profiles_pages_stay_on_the_compat_part_when_the_public_url_names_the_query_service(
    make_service,
):
    """compose.yaml publishes the compat profiles on a port of their own, with ATTACHD_PUBLIC_URL on the query
    service's: a profile's next page is where the client reached it, its signed file links are the query
    service's."""
    public_url = compose_environment()["ATTACHD_PUBLIC_URL"]
    async with make_service(public_url=public_url) as svc:
        own = str(svc.client.make_url("/")).rstrip("/")
        account = "7001"
        auth = svc.auth(account, sub="5")
        bookingsync = "/compat/bookingsync/api/v3/task_management/attachments"
        for name in ("a.txt", "b.txt"):
            item = {
                "target_type": "TaskManagement::Task",
                "target_id": str(uuid.uuid4()),
                "remote_file": "aGk=",
                "name": name,
            }
            resp = await svc.client.post(bookingsync, json={"attachments": [item]}, headers=auth)
            assert resp.status == 201, await resp.text()
        resp = await svc.client.get(bookingsync, params={"per_page": "1"}, headers=auth)
        assert resp.status == 200
        links = [part.split(">")[0].lstrip(" <") for part in resp.headers["Link"].split(",")]
        assert links and all(link.startswith(f"{own}/compat/bookingsync/") for link in links), links
        [item] = (await resp.json(content_type=None))["attachments"]
        assert item["file"]["original"].startswith(f"{public_url}/v1/files/")

        autotask = "/compat/autotask/atservicesrest/v1.0"
        credential = {"ApiIntegrationCode": "C", "UserName": "u@example.com", "Secret": svc.token(account)}
        search = {"filter": [{"op": "exist", "field": "id"}], "MaxRecords": 1}
        resp = await svc.client.post(f"{autotask}/AttachmentInfo/query", json=search, headers=credential)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["pageDetails"]["nextPageUrl"].startswith(f"{own}{autotask}/AttachmentInfo/")


@pytest.mark.parametrize("args", [["migrate"], ["create-bucket", "--wait", "1"]], ids=lambda args: args[0])
def test_an_init_container_says_what_setting_is_wrong_in_one_line(args, monkeypatch, caplog):
    """Every pod runs `attachd migrate` (and the dev overlay `create-bucket`) before its part: a setting that
    does not parse stops them as it stops the parts, in one line naming it (exit code 2), not a traceback."""
    monkeypatch.setattr(cli.logs, "configure", lambda *args, **kwargs: None)
    monkeypatch.setenv("ATTACHD_TUS_PART_BYTES", "1024")
    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    assert exited.value.code == 2
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"]
    assert line.startswith(f"attachd {args[0]} cannot start: ATTACHD_TUS_PART_BYTES: must be at least")


@pytest.mark.parametrize("where", ["no server", "no database"])
def test_migrate_says_in_one_line_which_postgres_it_cannot_reach(where, pg_url, monkeypatch, caplog):
    """The init container's `attachd migrate` against a Postgres that is not there (yet), or a database that
    is not: one line naming it, its password left out (exit code 1; Kubernetes starts it again), no traceback."""
    monkeypatch.setattr(cli.logs, "configure", lambda *args, **kwargs: None)
    if where == "no server":
        url = f"postgresql://attachd:s3cret@127.0.0.1:{free_port()}/attachd"
    else:
        url = f"{pg_url.rsplit('/', 1)[0]}/missing_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("ATTACHD_DATABASE_URL", url)
    with pytest.raises(SystemExit) as exited:
        cli.main(["migrate"])
    assert exited.value.code == 1
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"]
    assert line.startswith("attachd migrate cannot start: cannot reach Postgres at postgresql://")
    assert "s3cret" not in line and "\n" not in line
