"""Throughput through PluginClient <-> Plugin, the plugin in its own process.

Run: PYTHONPATH=src python tests/plugin/perf_plugin.py
Environment: MIB (default 256), ROUNDS (default 5), CHUNKS (default "65536,1048576").
Prints, per chunk size and direction: median MB/s, gRPC messages, and the
CPU seconds each process used (CPU is steadier than wall time on a busy box).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time

from chunkwire.client import PluginClient

SERVER = r"""
import sys
from chunkwire import Plugin

plugin = Plugin("bench", chunk_size=int(sys.argv[2]))
BLOCK = bytes(1 << 20)

@plugin.route("/download")
async def download(request, response):
    for _ in range(int(request.query["mib"])):
        await response.write(BLOCK)

@plugin.route("/upload", methods=["POST"])
async def upload(request, response):
    total = 0
    async for chunk in request.body:
        total += len(chunk)
    await response.write(str(total).encode())

plugin.run(sys.argv[1])
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(address: str, chunk_size: int, mib: int, rounds: int, pid: int) -> dict:
    results = {}
    size = mib << 20
    upload_body = bytes(size)
    async with PluginClient(address, chunk_size=chunk_size) as client:
        for kind in ("download", "upload"):
            rates, plugin_cpu, client_cpu = [], [], []
            messages = 0
            for _ in range(rounds):
                p0, c0 = cpu_seconds(pid), time.process_time()
                t0 = time.perf_counter()
                if kind == "download":
                    async with client.request("GET", "/download", query={"mib": mib}) as resp:
                        received = 0
                        async for chunk in resp.body:
                            received += len(chunk)
                    messages = resp.messages
                else:
                    async with client.request("POST", "/upload", body=upload_body) as resp:
                        received = int(await resp.read())
                    messages = -(-size // chunk_size)
                elapsed = time.perf_counter() - t0
                assert received == size
                rates.append(size / elapsed / 1e6)
                plugin_cpu.append(cpu_seconds(pid) - p0)
                client_cpu.append(time.process_time() - c0)
            results[kind] = {
                "mb_s": statistics.median(rates),
                "rounds": [round(r) for r in rates],
                "messages": messages,
                "plugin_cpu": statistics.median(plugin_cpu),
                "client_cpu": statistics.median(client_cpu),
            }
    return results


def main() -> None:
    mib = int(os.environ.get("MIB", "256"))
    rounds = int(os.environ.get("ROUNDS", "5"))
    chunks = [int(c) for c in os.environ.get("CHUNKS", "65536,1048576").split(",")]
    for chunk_size in chunks:
        sock = f"/tmp/cw-perf-{os.getpid()}.sock"
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, f"unix:{sock}", str(chunk_size)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        proc.stdout.readline()
        try:
            results = asyncio.run(measure(f"unix:{sock}", chunk_size, mib, rounds, proc.pid))
        finally:
            proc.terminate()
            proc.wait()
        for kind, r in results.items():
            print(
                f"chunk {chunk_size >> 10:5d} KiB {kind:8s} {mib} MiB: "
                f"median {r['mb_s']:6.0f} MB/s  messages {r['messages']:5d}  "
                f"plugin CPU {r['plugin_cpu']:.2f}s  client CPU {r['client_cpu']:.2f}s  "
                f"rounds {r['rounds']}"
            )


if __name__ == "__main__":
    main()
