"""Event loops on threads of their own (the Events service's, the NATS client's)
and the interpreter's switch interval while they run."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from collections.abc import Coroutine
from typing import Any

# While a loop of ours runs on its own thread, the switch interval is at most
# this. An event crosses threads (gRPC's poller, the Events service, NATS's
# reader, the gateway's loop), and a thread that wants the GIL while the
# gateway's loop writes to many streams waits the whole interval: at Python's
# 5 ms, events reached the broker 5.8 ms after publish() (median), at 1 ms 1.8 ms.
SWITCH_INTERVAL = 0.001
_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.0


def lower_switch_interval() -> None:
    global _switch_users, _switch_saved
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            if _switch_saved > SWITCH_INTERVAL:
                sys.setswitchinterval(SWITCH_INTERVAL)
        _switch_users += 1


def restore_switch_interval() -> None:
    global _switch_users
    with _switch_lock:
        _switch_users -= 1
        if _switch_users == 0 and _switch_saved > SWITCH_INTERVAL:
            sys.setswitchinterval(_switch_saved)


class LoopThread:
    """An event loop running on a daemon thread until ``stop()``."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=name, daemon=True)
        self._thread.start()
        ready.result()
        lower_switch_interval()

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set_result, None)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    async def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on this loop; awaited from another loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def stop(self) -> None:
        """Stop the loop (what is still scheduled on it is dropped) and join the thread."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            restore_switch_interval()
