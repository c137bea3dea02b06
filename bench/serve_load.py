"""The load side of `rho-bench serve`: server processes on loopback, one light asyncio aiohttp client, and the figures.

A server (rho-serve, or llama.cpp's llama-server as a peer) is started as its own process with its log in a file;
`drive` sends every prompt through ONE aiohttp session with `concurrency` requests in flight, non-streaming or
streaming (SSE), and returns tokens, wall time, TTFT and inter-token gaps (streaming), request latencies, the client's
own CPU seconds (getrusage) and the server's peak RSS (its whole process tree, sampled from /proc).
"""
from __future__ import annotations

import asyncio
import json
import resource
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"


@dataclass
class Dialect:
    """How one server's HTTP API asks for greedy, EOS-ignoring generation and reports its tokens."""

    name: str
    path: str
    stream_path: str

    def body(self, prompt: str, max_new_tokens: int, stream: bool) -> dict:
        if self.name == "llama":
            return {"prompt": prompt, "n_predict": max_new_tokens, "temperature": 0.0, "top_k": 1,
                    "ignore_eos": True, "stream": stream, "cache_prompt": False}
        return {"inputs": prompt, "parameters": {"max_new_tokens": max_new_tokens, "do_sample": False,
                                                 "ignore_eos": True, "details": not stream}}

    def count(self, body: dict) -> int:
        """Generated tokens in a non-streaming response."""
        return body["tokens_predicted"] if self.name == "llama" else body["details"]["generated_tokens"]

    def is_token_event(self, event: dict) -> bool:
        if self.name == "llama":
            return not event.get("stop", False) or bool(event.get("content"))
        return "token" in event


RHO = Dialect("rho", "/generate", "/generate_stream")
LLAMA = Dialect("llama", "/completion", "/completion")


@dataclass
class LoadResult:
    tokens: int
    seconds: float
    client_cpu_s: float
    peak_rss_mb: float
    latencies: list[float] = field(default_factory=list)  # per request, seconds
    ttfts: list[float] = field(default_factory=list)  # streaming only
    gaps: list[float] = field(default_factory=list)  # streaming only: time between consecutive token events

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server started as a user would, on loopback, its output in `log`; killed on exit whatever happens."""

    def __init__(self, argv: list[str], port: int, log: Path, cwd: Path | None = None, env: dict | None = None):
        self.port, self.log = port, log
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self._log_file, stderr=subprocess.STDOUT)
        self.started = time.monotonic()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def wait_healthy(self, timeout_s: float) -> float:
        """Seconds from the process's start to a 200 on /health; raises with the log's tail if it dies or times out."""
        import urllib.error
        import urllib.request

        start = self.started
        while time.monotonic() - start < timeout_s:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - start
            except (urllib.error.URLError, OSError):
                time.sleep(0.25)
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"server did not become healthy (exit code {self.proc.poll()}); log tail:\n{tail}")

    def rss_mb(self) -> float:
        return tree_rss_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def tree_pids(pid: int) -> list[int]:
    """A process and all its descendants (an engine-core child counts)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    pids, todo = [], [pid]
    while todo:
        pids.append(todo.pop())
        todo.extend(children.get(pids[-1], []))
    return pids


def rss_mb(pids: list[int]) -> float:
    """Summed resident memory of these processes, in MiB (gone ones count 0)."""
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def tree_rss_mb(pid: int) -> float:
    return rss_mb(tree_pids(pid))


def drive(server: ServerProcess, dialect: Dialect, prompts: list[str], max_new_tokens: int, concurrency: int,
          stream: bool, timeout_s: float) -> LoadResult:
    """Send all prompts through one aiohttp session, `concurrency` at a time; the whole run bounded by timeout_s."""
    return asyncio.run(asyncio.wait_for(
        _drive(server, dialect, prompts, max_new_tokens, concurrency, stream), timeout_s))


async def _drive(server, dialect, prompts, max_new_tokens, concurrency, stream) -> LoadResult:
    import aiohttp

    gate = asyncio.Semaphore(concurrency)
    latencies, ttfts, gaps = [], [], []
    pids = tree_pids(server.proc.pid)  # once: sampling then reads only these processes' status files
    peak = [rss_mb(pids)]

    async def one(session, prompt: str) -> int:
        async with gate:
            sent = time.perf_counter()
            path = dialect.stream_path if stream else dialect.path
            async with session.post(path, json=dialect.body(prompt, max_new_tokens, stream)) as r:
                if r.status != 200:
                    raise RuntimeError(f"{path} answered {r.status}: {(await r.text())[:300]}")
                n = await (_read_stream(r, dialect, sent, ttfts, gaps) if stream else _read_body(r, dialect))
            latencies.append(time.perf_counter() - sent)
            return n

    async def sample_rss():
        while True:
            await asyncio.sleep(0.2)
            peak[0] = max(peak[0], rss_mb(pids))

    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    # llama-server closes a connection after a streamed response without saying so (no `Connection: close`): a
    # reused one then fails with "Can not write request body". Its streams get a connection each.
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=stream and dialect.name == "llama")
    async with aiohttp.ClientSession(server.url, timeout=timeout, connector=connector) as session:
        sampler = asyncio.create_task(sample_rss())
        cpu0, start = _cpu_seconds(), time.perf_counter()
        try:
            counts = await asyncio.gather(*(one(session, p) for p in prompts))
        finally:
            seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
            sampler.cancel()
    return LoadResult(sum(counts), seconds, cpu, max(peak[0], rss_mb(pids)), latencies, ttfts, gaps)


async def _read_body(r, dialect: Dialect) -> int:
    return dialect.count(await r.json())


async def _read_stream(r, dialect: Dialect, sent: float, ttfts: list, gaps: list) -> int:
    n, last = 0, None
    async for raw in r.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]" or not dialect.is_token_event(json.loads(payload)):
            continue
        now = time.perf_counter()
        if last is None:
            ttfts.append(now - sent)
        else:
            gaps.append(now - last)
        last, n = now, n + 1
    return n


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]
