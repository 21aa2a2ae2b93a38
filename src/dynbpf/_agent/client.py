"""A client of the agent's control API over its unix socket (aiohttp): what ``dynbpf ctl`` uses.

Failures are :class:`ControlError` with a message a person can act on: no
agent at the socket, a socket this user may not open, or the agent's own
refusal (its JSON ``error``, and the HTTP status).
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import aiohttp

from dynbpf._agent import SOCKET_ENV
from dynbpf.errors import DynbpfError


class ControlError(DynbpfError):
    """The agent could not be reached, or refused; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0, body: Mapping[str, Any] | None = None) -> None:
        self.status = status
        self.body = dict(body or {})
        super().__init__(message)


class NoAgentError(ControlError):
    """Nobody listens on the socket (yet): no file there, or nobody accepting on it."""


class Client:
    def __init__(self, socket_path: str, *, timeout: float | None = 300.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _session(self, timeout: float | None) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=self.socket_path), timeout=aiohttp.ClientTimeout(total=timeout)
        )

    async def call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, params: Mapping[str, str] | None = None
    ) -> Any:
        """One request; the decoded JSON answer, or :class:`ControlError`."""
        async with self._session(self.timeout) as session:
            try:
                async with session.request(method, _url(path), json=body, params=params) as response:
                    text = await response.text()
                    if path == "/metrics":
                        return self._check(response.status, text, raw=True)
                    return self._check(response.status, text)
            except aiohttp.ClientConnectorError as e:
                raise self._unreachable(e) from None

    async def wait(self, timeout: float, *, alive: Callable[[], bool] | None = None) -> Any:
        """The agent's status as soon as it answers, waiting up to ``timeout`` seconds for it.

        An agent just started answers only once its applications run (it
        listens before, so a request waits; before it binds, nobody
        listens): a script starting one waits for this instead of
        sleeping. Nobody listening, or a connection the agent dropped as it
        failed, is waited out while ``alive()`` (the agent's process, say)
        holds; a refusal raises at once.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                return await asyncio.wait_for(self.call("GET", "/v1/status"), max(0.0, deadline - loop.time()))
            except TimeoutError:  # it listens, but has not answered yet
                raise NoAgentError(f"the agent at {self.socket_path} did not answer within {timeout:g} s") from None
            except (NoAgentError, aiohttp.ClientError) as e:
                if alive is not None and not alive():
                    raise NoAgentError(f"the agent stopped before it answered on {self.socket_path}") from e
                if loop.time() + 0.05 >= deadline:
                    raise NoAgentError(f"{e} (waited {timeout:g} s)") from None
            await asyncio.sleep(0.05)

    async def stream(self, path: str, params: Sequence[tuple[str, str]] = ()) -> AsyncIterator[dict[str, Any]]:
        """The JSON lines of a streaming answer (events), as they come."""
        async with self._session(None) as session:
            try:
                async with session.get(_url(path), params=params) as response:
                    if response.status != 200:
                        self._check(response.status, await response.text())
                    async for line in response.content:
                        if line.strip():
                            yield json.loads(line)
            except aiohttp.ClientConnectorError as e:
                raise self._unreachable(e) from None

    def _check(self, status: int, text: str, *, raw: bool = False) -> Any:
        if status == 200:
            return text if raw else json.loads(text)
        try:
            body = json.loads(text)
            message = body.get("error", text)
        except (json.JSONDecodeError, AttributeError):
            body, message = {}, text
        raise ControlError(f"the agent refused ({status}): {message}", status, body if isinstance(body, dict) else {})

    def _unreachable(self, e: aiohttp.ClientConnectorError) -> ControlError:
        code = e.os_error.errno if e.os_error is not None else None
        where = self.socket_path
        if code == errno.EACCES:
            return ControlError(
                f"permission denied on {where}: the agent's control socket is for root "
                "(and the group its configuration names, if any); run as root or as a member of that group"
            )
        if code in (errno.ENOENT, errno.ECONNREFUSED):
            return NoAgentError(
                f"no agent listens on {where} (is `dynbpf agent` running? --socket or ${SOCKET_ENV} names another)"
            )
        return ControlError(f"cannot reach the agent at {where}: {e.os_error or e}")


def _url(path: str) -> str:
    return f"http://dynbpf{path}"  # the host is ignored: the connector's socket is the address


def run(socket_path: str, fn: Callable[[Client], Any]) -> Any:
    """``fn(client)`` (a coroutine) run to its end: the synchronous entry ``dynbpf ctl`` uses."""
    return asyncio.run(fn(Client(socket_path)))
