#!/usr/bin/env python3
"""Hostile-client probes against a running sluice-gateway (make edge-probe).

Measures, on loopback only, what docs/security.md reports:
  1. a Standard Webhooks request with 5,000 signatures and a declared 4 MiB
     body (only its head is sent): time to the answer;
  2. probes sent while large signed-format bodies are verified: their latency;
  3. 500 half-sent request heads: how many are closed, and when;
  4. 2,000 connections streaming 4 MiB bodies slowly, while signed small
     requests are sent: the gateway's peak RSS and the small requests'
     statuses and latency percentiles.

Usage: edge-probe.py HOST:PORT GATEWAY_PID HMAC_SECRET [STEPS, e.g. 1,3]
The gateway must have a `whatzme` (hmac-sha256, X-Signature, sha256=) and a
`std` (standard-webhooks) source, as scripts/edge-probe.sh configures.
"""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import sys
import time


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def request(host, port, raw, timeout=10.0):
    """Sends raw bytes, returns (status, seconds) or (None, seconds)."""
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(raw)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        writer.close()
        status = int(line.split()[1]) if line else None
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        status = None
    return status, time.perf_counter() - started


def signed_small(secret, run, i):
    body = ('{"event":"messages.upsert","messages":[{"key":{"id":"%s-%d"}}]}' % (run, i)).encode()
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    head = (
        "POST /webhooks/whatzme HTTP/1.1\r\nhost: p\r\nconnection: close\r\n"
        f"x-signature: sha256={sig}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def five_thousand(host, port):
    entry = "v1," + base64.b64encode(os.urandom(32)).decode()
    signatures = " ".join([entry] * 5000)
    head = (
        "POST /webhooks/std HTTP/1.1\r\nhost: p\r\nconnection: close\r\n"
        f"webhook-id: msg_1\r\nwebhook-timestamp: {int(time.time())}\r\n"
        f"webhook-signature: {signatures}\r\ncontent-length: {4 * 1024 * 1024}\r\n\r\n"
    ).encode()
    probe = b"POST /webhooks/nosuch HTTP/1.1\r\nhost: p\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    attack = asyncio.create_task(request(host, port, head))
    await asyncio.sleep(0.001)
    probe_status, probe_s = await request(host, port, probe)
    status, seconds = await attack
    print(f"1. 5,000 signatures ({len(head)} bytes of head), 4 MiB declared: "
          f"{status} in {seconds * 1000:.1f} ms; a probe sent meanwhile: {probe_status} in {probe_s * 1000:.1f} ms")


async def big_bodies_and_probes(host, port, parallel):
    body = b"{" + b" " * (4 * 1024 * 1024 - 2) + b"}"
    head = (
        "POST /webhooks/whatzme HTTP/1.1\r\nhost: p\r\nconnection: close\r\n"
        f"x-signature: sha256={'ab' * 32}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    probe = b"POST /webhooks/nosuch HTTP/1.1\r\nhost: p\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    big = [asyncio.create_task(request(host, port, head + body)) for _ in range(parallel)]
    probes = []
    while not all(task.done() for task in big):
        probes.append(await request(host, port, probe))
        await asyncio.sleep(0.002)
    results = [task.result() for task in big]
    latencies = [s for _, s in probes]
    statuses = sorted({st for st, _ in results})
    print(f"2. {parallel} signed-format 4 MiB bodies (answers {statuses}, slowest "
          f"{max(s for _, s in results) * 1000:.0f} ms); {len(probes)} probes meanwhile: "
          f"p50 {percentile(latencies, 0.5) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")


async def half_heads(host, port, count=500):
    streams = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /webhooks/whatzme HTTP/1.1\r\nHost: x\r\n")
        streams.append((reader, writer))
    started = time.perf_counter()

    async def closed_at(reader):
        try:
            await asyncio.wait_for(reader.read(1), 30)
        except (OSError, asyncio.TimeoutError):
            pass
        return time.perf_counter() - started

    times = await asyncio.gather(*(closed_at(r) for r, _ in streams))
    for _, writer in streams:
        writer.close()
    print(f"3. {count} half-sent heads: all closed after {min(times):.2f} to {max(times):.2f} s")


async def small_requests(host, port, secret, seconds):
    """Signed small requests, 100 a second, from their own process (so the
    slow streams' event loop does not delay them); prints JSON results."""
    run = os.urandom(4).hex()
    tasks = []
    started = time.perf_counter()
    i = 0
    while time.perf_counter() - started < seconds:
        tasks.append(asyncio.create_task(request(host, port, signed_small(secret, run, i), timeout=5)))
        i += 1
        await asyncio.sleep(0.01)
    print(json.dumps(await asyncio.gather(*tasks)))


async def slow_bodies_and_small_requests(host, port, pid, secret, pause, conns=2000, seconds=20.0):
    stop = asyncio.Event()
    opened = 0

    async def slow():
        nonlocal opened
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(host, port)
                opened += 1
                writer.write((
                    "POST /webhooks/whatzme HTTP/1.1\r\nhost: p\r\n"
                    f"x-signature: sha256={'cd' * 32}\r\ncontent-length: {4 * 1024 * 1024}\r\n\r\n"
                ).encode())
                while not stop.is_set() and not reader.at_eof():
                    writer.write(b" " * 16384)
                    await writer.drain()
                    await asyncio.sleep(pause)
                writer.close()
            except OSError:
                await asyncio.sleep(0.1)

    slow_tasks = [asyncio.create_task(slow()) for _ in range(conns)]
    await asyncio.sleep(2)
    small = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--small", host, str(port), secret, str(seconds),
        stdout=asyncio.subprocess.PIPE)
    peak = 0.0
    while small.returncode is None:
        peak = max(peak, rss_mib(pid))
        try:
            await asyncio.wait_for(small.wait(), 0.1)
        except asyncio.TimeoutError:
            pass
    results = json.loads(await small.stdout.read())
    stop.set()
    await asyncio.gather(*slow_tasks, return_exceptions=True)
    by_status = {}
    for status, latency in results:
        by_status.setdefault(status, []).append(latency)
    summary = ", ".join(
        f"{status}: {len(l)} (p50 {percentile(l, 0.5) * 1000:.1f} ms, p99 {percentile(l, 0.99) * 1000:.1f} ms, "
        f"max {max(l) * 1000:.1f} ms)"
        for status, l in sorted(by_status.items(), key=lambda kv: str(kv[0])))
    every = [latency for _, latency in results]
    print(f"4. {conns} connections streaming 4 MiB bodies at {16 / pause:.0f} KiB/s each ({opened} opened in all); "
          f"{len(results)} signed small requests from another process meanwhile: {summary}; "
          f"all answers p99 {percentile(every, 0.99) * 1000:.1f} ms; gateway peak RSS {peak:.1f} MiB")


async def main():
    if sys.argv[1] == "--small":
        await small_requests(sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
        return
    target, pid, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    host, port = target.rsplit(":", 1)
    port = int(port)
    steps = set(sys.argv[4].split(",")) if len(sys.argv) > 4 else {"1", "2", "3", "4"}
    print(f"gateway RSS at start: {rss_mib(pid):.1f} MiB")
    if "1" in steps:
        await five_thousand(host, port)
    if "2" in steps:
        await big_bodies_and_probes(host, port, 1)
        await big_bodies_and_probes(host, port, 10)
    if "3" in steps:
        await half_heads(host, port)
    if "4" in steps:
        await slow_bodies_and_small_requests(host, port, pid, secret, pause=1.0)
        await slow_bodies_and_small_requests(host, port, pid, secret, pause=0.1)


if __name__ == "__main__":
    asyncio.run(main())
