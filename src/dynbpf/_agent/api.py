"""The control API: HTTP and JSON on the agent's unix socket (aiohttp), routes in docs/agent.md, "API".

Every request is checked against the peer's credentials first; every
error is a JSON object ``{"error": message, "type": class}`` with a status
saying whose fault it is: 400 a wrong request, 403 refused (the peer, or a
path outside the pin root), 404 an unknown application, feature, program
or map, 409 the kernel or the application's state refused, 500 a bug.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dynbpf._agent import sock
from dynbpf._agent.apps import OutsideRootError, RunningApp
from dynbpf._agent.config import ConfigError
from dynbpf._agent.metrics import AgentCollector, registry
from dynbpf._features.application import FeatureState
from dynbpf._maps.errors import CodecError
from dynbpf.errors import DynbpfError, NotFound, SyscallError

if TYPE_CHECKING:
    from dynbpf._agent.service import Agent

log = logging.getLogger("dynbpf.agent")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AGENT: web.AppKey[Agent] = web.AppKey("agent")
GROUP: web.AppKey[int | None] = web.AppKey("group")
METRICS: web.AppKey[Any] = web.AppKey("metrics")
DEFAULT_READ = 100  # map entries a read returns unless asked


class RequestError(DynbpfError, ValueError):
    """The request itself is wrong: its body, a parameter."""


@web.middleware
async def peer_check(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer only root or the configured group's members, whatever the socket's mode says."""
    raw = request.transport.get_extra_info("socket") if request.transport is not None else None
    if raw is None or raw.family != socket.AF_UNIX:  # asyncio hands a TransportSocket: a socket's read-only view
        return _error(403, "refused: the control API answers on its unix socket only", "Refused")
    peer = sock.peer(raw)
    group = request.app[GROUP]
    if not peer.allowed(group):
        who = "root" + (f" and members of group {group}" if group is not None else "")
        log.warning(
            "peer refused",
            extra={"fields": {"pid": peer.pid, "uid": peer.uid, "gid": peer.gid, "path": request.path}},
        )
        message = f"refused: uid {peer.uid} (pid {peer.pid}) may not use the agent; it answers {who}"
        return _error(403, message, "Refused")
    return await handler(request)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except NotFound as e:  # without the library option's name (``constants=``): the request has its own words
        return _error(404, e.detail, type(e).__name__, name=e.name, kind=e.kind)
    except OutsideRootError as e:
        return _error(403, str(e), type(e).__name__, path=e.path)
    except (RequestError, ConfigError) as e:
        return _error(400, str(e), type(e).__name__, where=getattr(e, "where", None))
    except DynbpfError as e:
        extra: dict[str, Any] = {}
        failures = getattr(e, "failures", None)
        if failures is not None:
            extra["failures"] = {hook: [_decision(d) for d in ds] for hook, ds in failures.items()}
        return _error(409, str(e), type(e).__name__, **extra)
    except Exception as e:
        log.exception("API request failed", extra={"fields": {"path": request.path}})
        return _error(500, f"internal error: {type(e).__name__}: {e}", type(e).__name__)


def _decision(d: Any) -> Any:
    return d.as_dict() if hasattr(d, "as_dict") else d


def _error(status: int, message: str, error_type: str, **extra: Any) -> web.Response:
    body = {"error": message, "type": error_type, **{k: v for k, v in extra.items() if v is not None}}
    return web.json_response(body, status=status, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _json(value: Any) -> web.Response:
    return web.json_response(value, dumps=_dumps)


def _agent(request: web.Request) -> Agent:
    return request.app[AGENT]


def _app(request: web.Request) -> RunningApp:
    apps = _agent(request).apps
    name = request.match_info["app"]
    if name not in apps:
        raise NotFound("the agent", "application", name, apps)
    return apps[name]


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(f"the body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object, not {type(body).__name__}")
    return body


async def _change(request: web.Request, fn: Callable[[], Any], what: str, **fields: Any) -> Any:
    """Run a change on the agent's worker, after any change under way; logged with what it was."""
    agent = _agent(request)
    async with agent.changing:
        result = await agent.blocking(fn)
    log.info(what, extra={"fields": fields})
    return result


# --- routes ----------------------------------------------------------------------------------


async def status(request: web.Request) -> web.Response:
    return _json(await asyncio.to_thread(_agent(request).status))


async def app_status(request: web.Request) -> web.Response:
    return _json(await asyncio.to_thread(_app(request).status))


async def reload(request: web.Request) -> web.Response:
    return _json(await _agent(request).reload("API"))


async def features(request: web.Request) -> web.Response:
    """``{"features": {name: state}}``, or one feature's ``{"state": state}`` at .../features/{feature}: one apply."""
    app = _app(request)
    body = await _body(request)
    asked: Any = body.get("features")
    if "feature" in request.match_info:
        asked = {request.match_info["feature"]: body.get("state", "")}
    elif not isinstance(asked, dict) or not asked:
        raise RequestError('give {"features": {"name": "enabled|paused|disabled", ...}}')
    try:
        states = {name: FeatureState.of(state, where=f"feature {name!r}") for name, state in asked.items()}
    except ValueError as e:
        raise RequestError(str(e)) from None
    shown = {name: state.value for name, state in states.items()}
    decisions = await _change(request, lambda: app.change(states), "features changed", app=app.name, features=shown)
    return _json({"app": app.name, "features": shown, "decisions": decisions})


async def constants(request: web.Request) -> web.Response:
    app = _app(request)
    values = (await _body(request)).get("constants")
    if not isinstance(values, dict) or not values:
        raise RequestError('give {"constants": {"name": value, ...}}')
    try:
        reloaded = await _change(
            request, lambda: app.set_constants(values), "constants set", app=app.name, constants=values
        )
    except CodecError as e:  # a value the constant's type cannot hold: the request's fault, and nothing changed
        raise RequestError(str(e)) from None
    return _json({"app": app.name, "constants": values, "reloaded": list(reloaded)})


async def programs(request: web.Request) -> web.Response:
    return _json(await _agent(request).blocking(_app(request).programs))


async def reload_program(request: web.Request) -> web.Response:
    app = _app(request)
    program = app.program(request.match_info["program"])

    def reload() -> tuple[int, int]:
        old = program.id
        program.reload()
        return old, program.id

    old, new = await _change(request, reload, "program reloaded", app=app.name, program=program.name)
    return _json({"app": app.name, "program": program.name, "old_id": old, "id": new})


async def maps(request: web.Request) -> web.Response:
    return _json(await asyncio.to_thread(_app(request).maps))


async def read_map(request: web.Request) -> web.Response:
    app = _app(request)
    limit = _int(request.query.get("limit", str(DEFAULT_READ)), "limit")
    return _json(await asyncio.to_thread(app.read_map, request.match_info["map"], limit))


async def pin_map(request: web.Request) -> web.Response:
    app = _app(request)
    path = (await _body(request)).get("path")
    if not isinstance(path, str):
        raise RequestError('give {"path": "..."}: where to pin, below the application\'s pin_root')
    name = request.match_info["map"]
    full = await _change(request, lambda: app.pin_map(name, path), "map pinned", app=app.name, map=name)
    return _json({"app": app.name, "map": name, "path": full})


async def links(request: web.Request) -> web.Response:
    return _json(await _agent(request).blocking(_app(request).links))


async def events(request: web.Request) -> web.StreamResponse:
    """Records of the application's event maps as they come, one JSON object per line, until ``limit``."""
    app = _app(request)
    hub = _agent(request).hub
    maps = frozenset(request.query.getall("map", []))
    reading = hub.reading(app.name)
    unknown = sorted(maps - reading)
    if unknown:
        raise NotFound(f"application {app.name!r}", "event map", unknown[0], sorted(reading))
    if not reading:
        raise RequestError(f"application {app.name!r} reads no event map (configure apps.{app.name}.events)")
    limit = _int(request.query.get("limit", "0"), "limit")
    sub = hub.subscribe(app.name, maps)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    sent = 0
    try:
        while True:
            try:
                event = await asyncio.wait_for(sub.queue.get(), 1.0)
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    break  # the client went away
                continue
            await response.write((_dumps(event) + "\n").encode())
            if "end" in event:
                break
            sent += 1
            if limit and sent >= limit:
                break
    except ConnectionError:
        pass
    finally:
        hub.unsubscribe(sub)
    if request.transport is not None and not request.transport.is_closing():
        await response.write_eof()
    return response


async def metrics(request: web.Request) -> web.Response:
    body = await asyncio.to_thread(generate_latest, request.app[METRICS])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _int(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise RequestError(f"{name}={text!r} is not an integer") from None
    if value < 0:
        raise RequestError(f"{name} must be 0 or more")
    return value


def application(agent: Agent, group: int | None) -> web.Application:
    """The API's aiohttp application (peer check, errors as JSON, every route)."""
    app = web.Application(middlewares=[peer_check, errors])
    app[AGENT] = agent
    app[GROUP] = group
    app[METRICS] = _registry(agent)
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/reload", reload)
    app.router.add_get("/v1/apps/{app}", app_status)
    app.router.add_post("/v1/apps/{app}/features", features)
    app.router.add_post("/v1/apps/{app}/features/{feature}", features)
    app.router.add_post("/v1/apps/{app}/constants", constants)
    app.router.add_get("/v1/apps/{app}/programs", programs)
    app.router.add_post("/v1/apps/{app}/programs/{program}/reload", reload_program)
    app.router.add_get("/v1/apps/{app}/maps", maps)
    app.router.add_get("/v1/apps/{app}/maps/{map}", read_map)
    app.router.add_post("/v1/apps/{app}/maps/{map}/pin", pin_map)
    app.router.add_get("/v1/apps/{app}/links", links)
    app.router.add_get("/v1/apps/{app}/events", events)
    app.router.add_get("/metrics", metrics)
    return app


def _registry(agent: Agent) -> Any:
    return registry(
        AgentCollector(lambda: dict(agent.apps), lambda: dict(agent.hub.counts), lambda: dict(agent.reloads))
    )


async def serve(agent: Agent, listening: socket.socket, metrics_port: int | None) -> list[web.AppRunner]:
    """Serve the API on ``listening``, and /metrics alone on 127.0.0.1:``metrics_port`` if given.

    Returns the runners to clean up when the agent stops (also when this
    fails half way: what started is in the list given back with the error).
    """
    api = application(agent, agent.settings.socket_group)
    runners = [web.AppRunner(api, access_log=None)]
    await runners[0].setup()
    await web.SockSite(runners[0], listening, shutdown_timeout=1.0).start()
    if metrics_port is not None:
        scrape = web.Application()
        scrape[METRICS] = api[METRICS]
        scrape.router.add_get("/metrics", metrics)
        runners.append(web.AppRunner(scrape, access_log=None))
        await runners[1].setup()
        try:
            await web.TCPSite(runners[1], "127.0.0.1", metrics_port, shutdown_timeout=1.0).start()
        except OSError as e:
            for runner in runners:
                await runner.cleanup()
            raise SyscallError(
                "bind", e.errno or errno.EIO, "cannot serve metrics", f"127.0.0.1:{metrics_port}"
            ) from None
    return runners
