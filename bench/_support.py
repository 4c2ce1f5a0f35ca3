"""What the benchmarks share: settings for a throwaway service, a fresh embedded database beside
the WeChat emulator, the service started as its own process, a minimal keep-alive HTTP client,
closed-loop load with latency percentiles, and generated provincial years cached on disk. Not a
benchmark itself: `make bench` runs the files of bench/ whose names do not start with an
underscore."""

from __future__ import annotations

import ast
import asyncio
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from bson import ObjectId  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402
from pymongo.errors import PyMongoError  # noqa: E402

from config import Settings, load_settings  # noqa: E402
from server.context import Context  # noqa: E402
from server.db import EmbeddedDatabase  # noqa: E402
from server.db.embedded import free_port  # noqa: E402
from server.domain.wiring import wire  # noqa: E402
from server.processes import die_with_parent  # noqa: E402
from server.wechat.emulator import EmulatorState, start_emulator  # noqa: E402

KEY = base64.urlsafe_b64encode(b"b" * 32).decode()  # fixed keys: benchmark data is thrown away


def bench_settings(uri: str, emulator_port: int, data_dir, **overrides) -> Settings:
    """Settings of a context (or a service) on `uri`, its own database, WeChat the emulator."""
    fields = {
        "mongodb_uri": uri,
        "mongodb_db": f"bench_{uuid.uuid4().hex[:8]}",
        "wechat_api_base": f"http://127.0.0.1:{emulator_port}/",
        "data_dir": str(data_dir),
        "secret_key": KEY,
        "data_key": KEY,
        "scheduler": False,
    }
    return load_settings({}, **{**fields, **overrides})


async def start_context(settings: Settings) -> Context:
    """A context wired as the service wires its own."""
    ctx = await Context.start(settings)
    await wire(ctx)
    return ctx


@contextlib.asynccontextmanager
async def fresh_parts(latency_ms: float = 0.0) -> AsyncIterator[tuple[EmulatorState, Settings]]:
    """A fresh in-memory database process and the emulator (answering after `latency_ms`),
    with the settings of a context on them; all stopped on the way out."""
    database = EmbeddedDatabase(":memory:")
    await database.start()
    emulator, state, port = start_emulator()
    state.latency_ms = latency_ms
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            yield state, bench_settings(database.uri, port, data_dir)
    finally:
        emulator.stop()
        await database.stop()


def say(bench: str, *parts: object) -> None:
    """Progress goes to stderr: stdout holds the JSON lines only."""
    print(f"{bench}:", *parts, file=sys.stderr, flush=True)


# -- the service as its own process -----------------------------------------------------------


class Service:
    """`python -m server` on the database at `uri` (named `db_name`), with its own WeChat
    emulator, the bench's fixed keys, logging warnings to `data_dir/service.log`; `settings`
    adds IKEPU_* variables (e.g. IKEPU_PROCESSES)."""

    def __init__(self, uri: str, db_name: str, data_dir: Path, **settings: str) -> None:
        self.port = free_port()
        self.emulator_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "service.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("IKEPU_")}
        env.update(
            IKEPU_MONGODB_URI=uri,
            IKEPU_MONGODB_DB=db_name,
            IKEPU_PORT=str(self.port),
            IKEPU_WECHAT_EMULATOR_PORT=str(self.emulator_port),
            IKEPU_SECRET_KEY=KEY,  # the same keys as the bench's own contexts
            IKEPU_DATA_KEY=KEY,
            IKEPU_LOG_LEVEL="warning",
            IKEPU_LOG_FORMAT="json",
            IKEPU_DATA_DIR=str(data_dir / "var"),
            **settings,
        )
        parent = os.getpid()
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: die_with_parent(parent),
            )

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def wait_healthy(self, timeout_s: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with httpx.AsyncClient(timeout=1) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the service exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.url + "/healthz")).status_code == 200:
                        return
                if loop.time() > deadline:
                    raise RuntimeError(f"the service did not answer /healthz:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    async def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- a minimal HTTP client --------------------------------------------------------------------


class KeepAlivePool:
    """A minimal HTTP/1.1 client: keep-alive connections over asyncio streams, one per request in
    flight. It costs tens of microseconds per request where httpx's pool costs milliseconds at
    hundreds of connections, and the client shares the machine with the service and database."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.netloc = parts.netloc
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, headers: dict[str, str]) -> tuple[int, dict]:
        return await self.request("POST", path, headers)

    async def get(self, path: str, headers: dict[str, str], *, parse: bool = True):
        """(status, JSON body); with `parse=False` the body stays bytes (the client's CPU is
        the service's too, on a shared machine)."""
        return await self.request("GET", path, headers, parse=parse)

    async def request(self, method: str, path: str, headers: dict[str, str], *, parse=True):
        conn = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        reader, writer = conn
        try:
            lines = [f"{method} {path} HTTP/1.1", f"Host: {self.netloc}"]
            if method != "GET":
                lines.append("Content-Length: 0")
            lines += [f"{name}: {value}" for name, value in headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionError("the service closed the connection")
            status = int(status_line.split()[1])
            length, chunked, close = None, False, False
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding":
                    chunked = "chunked" in value
                elif name == "connection":
                    close = value == "close"
            if chunked:
                body = await self._chunked(reader)
            elif length is not None:
                body = await reader.readexactly(length)
            else:
                body, close = await reader.read(), True
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self.idle.append(conn)
        if not parse:
            return status, body
        return status, json.loads(body) if body else {}

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while size := int((await reader.readline()).split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        return bytes(body)

    async def close(self) -> None:
        idle, self.idle = self.idle, []
        for _, writer in idle:
            writer.close()
        for _, writer in idle:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


CLIENT_ERRORS = (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, httpx.HTTPError)


# -- load and its figures ---------------------------------------------------------------------


async def bounded(coros, limit: int) -> list:
    gate = asyncio.Semaphore(limit)

    async def one(coro):
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


@dataclasses.dataclass
class Load:
    """What a closed loop did: each call's latency (s) and answer, and the wall time."""

    latencies: list[float]
    answers: list
    wall_s: float

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.count / self.wall_s if self.wall_s else 0.0

    def ms(self, q: int) -> float:
        return round(percentile(self.latencies, q) * 1000, 2)


async def closed_loop(
    call: Callable[[int], Awaitable],
    *,
    seconds: float,
    concurrency: int,
    limit: int | None = None,
    min_calls: int = 0,
) -> Load:
    """`concurrency` workers, each awaiting `call(i)` (i = 0, 1, 2... across all of them) back to
    back, until `seconds` have passed and at least `min_calls` were made (but never past 4 x
    `seconds`), or `limit` calls were made. An exception of `CLIENT_ERRORS` is the call's answer."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    soft, hard = started + seconds, started + 4 * seconds
    latencies: list[float] = []
    answers: list = []
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while limit is None or issued < limit:
            now = loop.time()
            if now >= hard or (now >= soft and issued >= min_calls):
                return
            i, issued = issued, issued + 1
            t = time.perf_counter()
            try:
                answer = await call(i)
            except CLIENT_ERRORS as exc:
                answer = (0, {"error": repr(exc)})
            latencies.append(time.perf_counter() - t)
            answers.append(answer)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Load(latencies, answers, loop.time() - started)


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def cpu_seconds(pids: dict[str, int | None]) -> dict[str, float]:
    """User + system CPU time of each process so far (Linux /proc; empty elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    used = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError, ValueError, IndexError, TypeError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used[name] = (int(fields[11]) + int(fields[12])) / ticks
    return used


def cpu_report(before: dict[str, float], after: dict[str, float], wall_s: float) -> str:
    return ", ".join(
        f"{name} {after[name] - before[name]:.1f}s ({(after[name] - before[name]) / wall_s:.0%})"
        for name in after
        if name in before
    )


# -- checks -----------------------------------------------------------------------------------


async def audit(ctx, activity_ids: list[ObjectId], capacity: int) -> tuple[int, int, list[str]]:
    """(confirmed records, oversold seats, counter mismatches) read back from the database."""
    confirmed = oversold = 0
    problems: list[str] = []
    for activity_id in activity_ids:
        doc = await ctx.db["activities"].find_one({"_id": activity_id})
        counts = {"confirmed": 0, "waitlisted": 0, "pending": 0}
        async for record in ctx.db["signups"].find({"activity_id": activity_id}, {"status": 1}):
            counts[record["status"]] = counts.get(record["status"], 0) + 1
        confirmed += counts["confirmed"]
        oversold += max(0, counts["confirmed"] - capacity)
        stored = (doc["confirmed_count"], doc["waitlist_count"], doc["pending_count"])
        recorded = (counts["confirmed"], counts["waitlisted"], counts["pending"])
        if stored != recorded:
            problems.append(f"{activity_id}: counters {stored} but records {recorded}")
        if "seats_left" in doc and doc["seats_left"] != doc["capacity"] - doc["confirmed_count"]:
            problems.append(f"{activity_id}: seats_left {doc['seats_left']} but counters say "
                            f"{doc['capacity'] - doc['confirmed_count']}")  # fmt: skip
    return confirmed, oversold, problems


# -- generated provincial years, cached -------------------------------------------------------

CACHE = ROOT / "var" / "bench-cache"
CACHE_DB = "ikepu_bench"  # the database name inside every cached directory
_CACHE_FORMAT = 3
# What the stored year depends on besides its Scale: the generator, the indexes it is built with,
# the roll-ups' shape (the generator writes them by the nightly recount), and the storage format
# of the server. A year written before a change of the domain's other shapes is data that the
# service migrates at start (as it would a deployment's), so the domain modules being rewritten
# do not invalidate it; `--refresh` regenerates.
_SHAPED_BY = ("server/seed.py", "server/db/indexes.py", "server/domain/stats/rollups.py")


def year_key(scale) -> str:
    """The cache key of a generated year: its Scale, the sources it depends on, the server."""
    digest = hashlib.sha256()
    digest.update(json.dumps(dataclasses.asdict(scale), sort_keys=True).encode())
    digest.update(f"format {_CACHE_FORMAT} secantusdb {metadata.version('secantusdb')}".encode())
    for name in _SHAPED_BY:
        digest.update(_code_of(ROOT / name).encode())
    return digest.hexdigest()[:16]


def _code_of(path: Path) -> str:
    """A module's code without its docstrings, comments or layout: what a key should follow."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


@contextlib.asynccontextmanager
async def loading_server(storage: Path) -> AsyncIterator[tuple[str, int]]:
    """An embedded server for a bulk load into `storage`, on a free port: (its URI, its pid). As
    the service starts it but without `--sync-on-commit`, which syncs the log at every commit
    while an index build writes one commit an entry, and `--standalone`, which keeps no oplog
    (a load that fails is thrown away, and nothing follows its changes). On the way out it is
    stopped with SIGTERM and waited for: it checkpoints, so the directory is a snapshot that a
    server started as the service starts it opens as it was."""
    launcher = Path(sys.executable).with_name("secantusd-py")
    port = free_port()
    parent = os.getpid()
    with open(storage.parent / "loading-db.log", "ab") as log_file:
        args = ["--host", "127.0.0.1", "--port", str(port), "--storage-path", str(storage)]
        proc = subprocess.Popen(
            [str(launcher), *args, "--standalone", "--log-level", "WARNING"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            preexec_fn=lambda: die_with_parent(parent),
        )
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true&retryWrites=false"
    try:
        client = AsyncMongoClient(uri, serverSelectionTimeoutMS=500)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"secantusd-py exited with {proc.returncode} on {storage}")
                try:
                    await client.admin.command("ping")
                    break
                except PyMongoError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await client.close()
        yield uri, proc.pid
    finally:
        proc.terminate()
        try:
            code = await asyncio.to_thread(proc.wait, 300)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code != 0:
            raise RuntimeError(f"secantusd-py on {storage} ended with {code}: not a snapshot")


async def cached_year(scale, *, refresh: bool = False, bench: str = "bench") -> tuple[Path, dict]:
    """The directory of a stopped embedded server holding `scale`'s year in database
    `CACHE_DB`, generated by `server.seed.seed_year` on first use (or with `refresh`), and its
    manifest (scale, what was written, seconds it took). Copy it before running on it."""
    from server.seed import seed_year

    CACHE.mkdir(parents=True, exist_ok=True)
    key = year_key(scale)
    home = CACHE / key
    with open(CACHE / f"{key}.lock", "w") as lock:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)  # one writer per key
        manifest_path = home / "manifest.json"
        if manifest_path.exists() and not refresh:
            return home / "db", json.loads(manifest_path.read_text())
        say(bench, f"generating {scale} into {home} (once: later runs reuse it)")
        shutil.rmtree(home, ignore_errors=True)
        building = CACHE / f"{key}.building"
        shutil.rmtree(building, ignore_errors=True)
        (building / "var").mkdir(parents=True)
        emulator, _, port = start_emulator()
        try:
            async with loading_server(building / "db") as (uri, db_pid):
                settings = bench_settings(
                    uri, port, building / "var", mongodb_db=CACHE_DB, log_level="warning"
                )
                ctx = await start_context(settings)
                try:
                    pids = {"db": db_pid, "bench": os.getpid()}
                    cpu_before = cpu_seconds(pids)
                    started = time.perf_counter()
                    written = await seed_year(ctx, scale, indexes_after=True)
                    seconds = time.perf_counter() - started
                    cpu = cpu_seconds(pids)
                finally:
                    await ctx.close()
        finally:
            emulator.stop()
        shutil.rmtree(building / "var", ignore_errors=True)
        manifest = {
            "scale": dataclasses.asdict(scale),
            "written": written,
            "seed_s": round(seconds, 1),
            "seed_cpu_s": {k: round(v - cpu_before.get(k, 0), 1) for k, v in cpu.items()},
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "db": CACHE_DB,
        }
        (building / "manifest.json").write_text(json.dumps(manifest, indent=1))
        building.rename(home)
        say(bench, f"generated in {seconds:.0f}s: {written}")
        _drop_superseded(key, manifest["scale"], bench)
        return home / "db", manifest


def _drop_superseded(key: str, scale: dict, bench: str) -> None:
    """Remove the cached years of the same Scale under other keys (older code or server)."""
    for other in CACHE.glob("*/manifest.json"):
        if other.parent.name == key:
            continue
        with contextlib.suppress(OSError, ValueError):
            if json.loads(other.read_text())["scale"] == scale:
                say(bench, f"removing {other.parent}, superseded by {key}")
                shutil.rmtree(other.parent, ignore_errors=True)
                (CACHE / f"{other.parent.name}.lock").unlink(missing_ok=True)


def copy_year(source: Path, into: Path) -> Path:
    """A private copy of a cached year's directory (runs write to their database)."""
    target = into / "db"
    # cp copies sparse WiredTiger files faster than shutil and reflinks where the disk can.
    done = subprocess.run(
        ["cp", "-r", "--reflink=auto", "--sparse=always", str(source), str(target)],
        capture_output=True,
    )
    if done.returncode != 0:
        shutil.copytree(source, target)
    return target
