"""What the native module needs from Python: the configuration scope (a
``ContextVar``, so it follows asyncio tasks), and the wrappers that turn
asyncio cancellation into the core's cancellation token and ``None`` into
the end of an async iteration."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
from collections.abc import Awaitable, Coroutine, Generator, Iterator
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


def guard(work: Awaitable[T], token: "CancelToken") -> "Guarded[T]":
    """Await a long native call; when the task is cancelled, fire the core's
    token, wait until the core has stopped and removed what it staged, then
    raise ``CancelledError``."""
    return Guarded(_guarded(work, token))


class Guarded(Coroutine[Any, Any, T]):
    """The coroutine of a long call. The core work starts when the call is
    made, so a task cancelled before its first step must still fire the
    token and wait: a plain coroutine would end without running its body."""

    __slots__ = ("_coro", "_started")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._started = False

    def send(self, value: Any) -> Any:
        self._started = True
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None, /) -> Any:
        if not self._started:
            # Enter the body (it now awaits the call), then cancel it there.
            self.send(None)
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, T]:
        return self._coro.__await__()


async def _guarded(work: Awaitable[T], token: "CancelToken") -> T:
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
