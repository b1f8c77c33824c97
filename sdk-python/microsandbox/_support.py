"""What the native module needs from Python: the configuration scope (a
``ContextVar``, so it follows asyncio tasks), and the wrappers that turn
asyncio cancellation into the core's cancellation token and ``None`` into
the end of an async iteration."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
from collections.abc import Awaitable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Optional, TypeVar

from microsandbox import _native

if TYPE_CHECKING:
    from microsandbox._native import CancelToken, Config, NativeTask

T = TypeVar("T")

# A native worker that enters Python while the interpreter finalizes would
# crash the process: at exit, wait for the calls about to hand back results.
atexit.register(_native.drain, 5.0)

CONFIG: ContextVar[Optional["Config"]] = ContextVar("microsandbox_config", default=None)
"""The ``use_config`` scope in force; read by every native call when it starts."""


def current_config() -> Optional["Config"]:
    """The configuration of the innermost ``use_config`` scope, if any."""
    return CONFIG.get()


@contextlib.contextmanager
def use_config(config: "Config") -> Iterator["Config"]:
    """Run the calls made inside the block (and the tasks it starts) under
    ``config``; its unset fields come from the enclosing scope, then the
    process default (``set_default_config``), then the environment."""
    merged = config.over(CONFIG.get())
    reset = CONFIG.set(merged)
    try:
        yield merged
    finally:
        CONFIG.reset(reset)


async def run(work: "asyncio.Future[T]", task: "NativeTask") -> T:
    """A native call's asyncio future as a coroutine (so that
    ``asyncio.create_task`` and friends take it); cancelling it drops the work."""
    try:
        return await work
    except asyncio.CancelledError:
        task.abort()
        raise


def settle(future: "asyncio.Future[Any]", ok: bool, value: Any) -> None:
    """Settle ``future`` with a native call's outcome (the native worker
    schedules this on the loop with ``call_soon_threadsafe``)."""
    if future.done():  # cancelled meanwhile
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


async def guard(work: Awaitable[T], token: "CancelToken") -> T:
    """Await a long native call; when the task is cancelled, fire the core's
    token, wait until the core has stopped and removed what it staged, then
    raise ``CancelledError``."""
    future = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        token.cancel()
        # The core's own `Cancelled` error (or a result that raced the
        # cancellation) is dropped: the caller asked for cancellation.
        with contextlib.suppress(BaseException):
            await future
        raise


async def end_on_none(work: Awaitable[Optional[T]]) -> T:
    """``__anext__`` of a native iterator: ``None`` ends the iteration."""
    item = await work
    if item is None:
        raise StopAsyncIteration
    return item
