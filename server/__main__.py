"""`python -m server`: run the service (default; `--processes N` for N service processes on one
database, server/supervisor.py), or an operator's sub-command."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TYPE_CHECKING

import msgspec
import structlog
from tornado.httpserver import HTTPServer

from config import Settings, SettingsError, load_settings
from server.domain.access import STAFF_ROLES
from server.logs import configure_logging

if TYPE_CHECKING:
    from server.supervisor import Worker

log = structlog.get_logger("ikepu")

# Hundreds of volunteers tap 报名 in the same second when a popular activity opens.
LISTEN_BACKLOG = 2048


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument(
        "--processes", type=int, help="service processes on one database (IKEPU_PROCESSES)"
    )
    parser.add_argument(
        "--process-ports",
        choices=("shared", "each"),
        help="all on IKEPU_PORT (shared), or process i on IKEPU_PORT+i (IKEPU_PROCESS_PORTS)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="run the service (the default)")
    # What the supervisor starts N of (server/supervisor.py); not for operators.
    worker = commands.add_parser("worker")
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--ready-fd", type=int, required=True)
    commands.add_parser("seed-demo", help="load the demo data into an empty database")
    commands.add_parser("scheduler", help="run only the scheduler (reminders, daily jobs)")
    scale = commands.add_parser(
        "seed-scale", help="write a generated provincial year into an empty database"
    )
    scale.add_argument("--volunteers", type=int, default=148_000)
    scale.add_argument("--activities", type=int, default=11_425)
    scale.add_argument("--year", type=int, default=2026)
    scale.add_argument("--trips", type=int, default=1_220)
    scale.add_argument("--seed", type=int, default=2026)
    grant = commands.add_parser("grant", help="grant a staff role to a WeChat user")
    grant.add_argument("--openid", required=True)
    grant.add_argument("--role", required=True, choices=sorted(STAFF_ROLES))
    grant.add_argument("--org", required=True, help="organisation id, or 'root'")
    args = parser.parse_args(argv)
    overrides = {"processes": args.processes, "process_ports": args.process_ports}
    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        print(f"ikepu: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    if args.command in (None, "run"):
        if settings.processes > 1:
            return asyncio.run(supervise(settings))
        return asyncio.run(serve(settings))
    if args.command == "worker":
        from server.supervisor import Worker

        return asyncio.run(serve(settings, worker=Worker(args.index, args.ready_fd)))
    if args.command == "scheduler":
        return asyncio.run(serve(settings, http=False))
    return asyncio.run(operate(settings, args))


async def operate(settings: Settings, args: argparse.Namespace) -> int:
    """Operator commands: they start the database as the service would, act, and stop."""
    from server.context import Context
    from server.demo import seed_demo
    from server.domain import access, identity, orgs
    from server.domain.errors import DomainError
    from server.domain.wiring import wire

    emulator, settings = _start_emulator(settings, 0)
    ctx = await Context.start(settings)
    # A command leaves plans to the services: taking one over would only hand it back.
    await wire(ctx, recover_plans=False)
    try:
        if args.command == "seed-demo":
            loaded = await seed_demo(ctx)
            print("demo data loaded" if loaded else "the database already has data; left as is")
        elif args.command == "seed-scale":
            await _seed_scale(ctx, args)
        elif args.command == "grant":
            org = (
                await orgs.root_org(ctx)
                if args.org == "root"
                else await orgs.get_org(ctx, args.org)
            )
            if org is None:
                print("ikepu: there is no root organisation yet", file=sys.stderr)
                return 1
            user_id = await identity.ensure_user(ctx, args.openid)
            created = await access.grant_role(ctx, user_id, args.role, org["_id"])
            state = "granted" if created else "already held"
            print(f"{args.role} in {org['name']} ({org['_id']}) for {args.openid}: {state}")
        return 0
    except DomainError as exc:
        print(f"ikepu: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await ctx.close()
        if emulator is not None:
            emulator.stop()


async def _seed_scale(ctx, args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from server.seed import Scale, seed_year

    scale = Scale(
        volunteers=args.volunteers,
        activities=args.activities,
        year=args.year,
        trips=args.trips,
        seed=args.seed,
    )
    with tqdm(total=scale.volunteers + scale.activities + scale.trips, unit="rec") as bar:
        written = await seed_year(ctx, scale, bar.update)
    print(" ".join(f"{k}={v}" for k, v in written.items()))


def _start_emulator(settings: Settings, port: int):
    """Without a real appid, WeChat is the local emulator (port 0: any free port)."""
    if not settings.uses_wechat_emulator:
        return None, settings
    from server.wechat.emulator import start_emulator

    emulator, _, port = start_emulator(port)
    base = f"http://127.0.0.1:{port}/"
    log.info("wechat_emulator_listening", url=base)
    return emulator, msgspec.structs.replace(settings, wechat_api_base=base)


def _print_console(settings: Settings) -> None:
    """Where the staff console is, and (demo with the emulator) whom to sign in as."""
    lines = [f"ikepu console: http://{settings.host}:{settings.port}/console/"]
    if settings.demo and settings.uses_wechat_emulator:
        from server.demo import staff_logins

        lines.append("  demo staff (type the openid into the login page's development form):")
        lines += [f"    {openid:<20} {who}" for openid, who in staff_logins(settings)]
    print("\n".join(lines), flush=True)


async def supervise(settings: Settings) -> int:
    """Several service processes (server/supervisor.py) beside one emulator and database."""
    from server.supervisor import Supervisor

    emulator, served = _start_emulator(settings, settings.wechat_emulator_port)
    env = {"IKEPU_WECHAT_API_BASE": served.wechat_api_base} if emulator is not None else {}
    try:
        return await Supervisor(settings, env).run(on_ready=lambda: _print_console(settings))
    finally:
        if emulator is not None:
            emulator.stop()


async def serve(settings: Settings, *, http: bool = True, worker: Worker | None = None) -> int:
    """The service in this process; as one of several (`worker`), without the emulator and
    the database, which the supervisor keeps, on the port it was given."""
    from jobs.scheduler import Scheduler
    from server.app import make_app
    from server.context import Context
    from server.domain.wiring import wire

    emulator = None
    if worker is None:
        emulator, settings = _start_emulator(settings, settings.wechat_emulator_port)
    ctx = await Context.start(settings)
    await wire(ctx)
    if settings.demo and (worker is None or worker.index == 0):
        from server.demo import seed_demo

        await seed_demo(ctx)
    server = None
    if http:
        # No xheaders: forwarded headers are believed only from trusted proxies (BaseHandler).
        server = HTTPServer(make_app(ctx))
        port = worker.port(settings) if worker else settings.port
        try:
            server.listen(
                port,
                settings.host,
                backlog=LISTEN_BACKLOG,
                reuse_port=worker is not None and worker.reuse_port(settings),
            )
        except OSError as exc:
            log.error("cannot_listen", host=settings.host, port=port, error=str(exc))
            await ctx.close()
            return 1
        log.info("listening", url=f"http://{settings.host}:{port}/")
        if worker is None:
            _print_console(settings)
    scheduler = None
    if settings.scheduler or not http:
        scheduler = Scheduler(ctx)
        scheduler.start()
    if worker is not None:
        worker.ready()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    log.info("stopping", in_flight=ctx.in_flight.count)
    if server is not None:
        server.stop()
        if not await ctx.in_flight.drained(settings.shutdown_grace_s):
            log.warning("stopping_with_requests_in_flight", in_flight=ctx.in_flight.count)
        await server.close_all_connections()
    if scheduler is not None:
        await scheduler.stop()
    if emulator is not None:
        emulator.stop()
    await ctx.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
