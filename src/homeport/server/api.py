"""Connections into the control plane: authentication and dispatch of messages to the services."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from .. import _protocol as P
from .._wire import FramedProtocol
from ..exception import Error, code_of
from . import dictqueue
from .access import container_refusal
from .images import ImageBuildFailed, ImageUnsupported
from .records import ERROR, STOP_GRACE_SECONDS, Peer
from .services import ControlPlane
from .validate import problem

log = logging.getLogger("homeport.server.api")

# The largest frame accepted before a connection has authenticated (a hello is a few hundred bytes):
# anyone who can reach the socket, a container included, must not make the control plane allocate.
PRE_AUTH_MAX_FRAME = 64 << 10


_LOOKUPS = {
    P.APP_LOOKUP: lambda cp, peer, msg: cp.lookup_app(msg),
    P.APP_LIST: lambda cp, peer, msg: cp.list_apps(),
    P.APP_HISTORY: lambda cp, peer, msg: cp.app_history(msg["name"]),
    P.APP_LOGS: lambda cp, peer, msg: cp.subscribe_logs(peer, msg["app_id"]),
    P.LOG_QUERY: lambda cp, peer, msg: cp.query_logs(msg),
    P.CONTAINER_EXEC_INFO: lambda cp, peer, msg: cp.container_exec_info(msg["container_id"]),
    P.FUNCTION_LOOKUP: lambda cp, peer, msg: cp.lookup_function(msg),
    P.SECRET_CREATE: lambda cp, peer, msg: cp.secrets.create(msg["name"], msg["values"], bool(msg.get("overwrite"))),
    P.SECRET_LIST: lambda cp, peer, msg: cp.secrets.list(),
    P.SECRET_DELETE: lambda cp, peer, msg: cp.secrets.delete(msg["name"]),
    P.VOLUME: lambda cp, peer, msg: cp.volume_op(peer, msg),
    P.PROXY_TOKEN: lambda cp, peer, msg: _proxy_token(cp, msg),
}
# Requests answered once their work is done (they open gateway ports).
_ASYNC = {
    P.APP_PUBLISH: lambda cp, peer, msg: cp.publish_app(msg),
    P.APP_DEPLOY: lambda cp, peer, msg: cp.deploy_app_web(peer, msg),
    # Dicts and Queues (a blocking get waits on the control plane for a put)
    P.DICT: lambda cp, peer, msg: dictqueue.handle(cp.dictqueue, peer, msg),
    P.QUEUE: lambda cp, peer, msg: dictqueue.handle(cp.dictqueue, peer, msg),
    P.SANDBOX: lambda cp, peer, msg: cp.sandboxes.op(peer, msg),
    P.TUNNEL: lambda cp, peer, msg: cp.tunnel_op(peer, msg),
    P.APP_ROLLBACK: lambda cp, peer, msg: cp.rollback_app(peer, msg),
}


def _proxy_token(cp: ControlPlane, msg: dict[str, Any]) -> Any:
    web = cp.web
    if web is None:
        raise LookupError("web endpoints are not available on this control plane")
    op = msg["op"]
    if op == "create":
        return web.create_token()
    if op == "list":
        return web.list_tokens()
    if op == "delete":
        return web.delete_token(msg["token_id"])
    raise LookupError(f"unknown proxy token operation {op!r}")


class Connection:
    """One accepted connection: an SDK client or a container, known after its hello."""

    def __init__(self, cp: ControlPlane, network: bool = False) -> None:
        self.cp = cp
        self.network = network  # accepted on the TCP listener: containers' credentials only
        self.proto = FramedProtocol(self.on_message, self.on_close)
        self.proto.max_frame = PRE_AUTH_MAX_FRAME
        self.proto.on_oversize = self._oversize
        self.peer: Peer | None = None
        self.container_id: str | None = None
        self.sandbox_id: str | None = None  # a sandbox's agent

    def _oversize(self, n: int) -> None:
        limit = self.proto.max_frame
        when = "after authentication" if limit > PRE_AUTH_MAX_FRAME else "before authentication"
        log.warning("closing a connection that announced a frame of %d bytes (the limit %s is %d)", n, when, limit)
        self.proto.send({"t": P.RESULT, "id": None, "ok": False, "code": "invalid",
                         "msg": f"a message of {n} bytes is larger than the {limit} bytes allowed {when}; "
                                "the control plane closes this connection"})

    def reply(self, msg: dict[str, Any], value: Any = None) -> None:
        self.proto.send({"t": P.RESULT, "id": msg["id"], "ok": True, "v": value})

    def reply_error(self, msg: dict[str, Any], code: str, text: str) -> None:
        rid = msg.get("id") if isinstance(msg, dict) else None
        self.proto.send({"t": P.RESULT, "id": rid if isinstance(rid, (int, str)) else None, "ok": False,
                         "code": code, "msg": text})

    def on_message(self, msg: dict[str, Any]) -> None:
        if not isinstance(msg, dict):
            self.reply_error({}, "invalid", problem(msg) or "malformed message")
            self.proto.close()
            return
        if self.container_id is not None:
            try:
                self.cp.container_message(self.container_id, msg)
            except Exception:  # the runtime's connection carries user code's writes too: never fatal
                log.warning("container %s sent a malformed %r message", self.container_id, msg.get("t"),
                            exc_info=True)
            return
        if self.sandbox_id is not None:
            self.cp.sandboxes.agent_message(self.sandbox_id, msg)
            return
        if self.peer is None:
            try:
                self._hello(msg)
            except Exception:
                log.warning("refused a malformed hello", exc_info=True)
                self.reply_error(msg, "auth", "malformed hello")
                self.proto.close()
            return
        why = problem(msg)
        if why is not None:
            log.warning("refused a malformed message: %s", why)
            if "id" in msg:
                self.reply_error(msg, "invalid", why)
            return
        try:
            if self.peer.container_id is not None:
                why = container_refusal(self.cp, self.peer.container_id, msg)
                if why is not None:
                    self._refuse(msg, why)
                    return
            self._client_message(msg)
        except Exception as exc:
            log.exception("error handling %s", msg.get("t"))
            if "id" in msg:
                self.reply_error(msg, "internal", f"{type(exc).__name__}: {exc}")

    def _hello(self, msg: dict[str, Any]) -> None:
        if msg.get("t") != P.HELLO:
            self.reply_error(msg, "auth", "the first message must be a hello")
            self.proto.close()
            return
        if msg.get("role") == "sandbox":
            if not self.cp.sandboxes.agent_hello(self.proto, msg):
                self.reply_error(msg, "auth", "unknown sandbox or wrong token")
                self.proto.close()
                return
            self.sandbox_id = msg["cid"]
            self.proto.max_frame = P.MAX_MESSAGE_BYTES  # its output comes in chunks of up to 1 MiB, files whole
            self.reply(msg, None)
            return
        if msg.get("role") == "container":
            definition = self.cp.container_hello(self.proto, msg)
            if definition is None:
                self.reply_error(msg, "auth", "unknown container or wrong container token")
                self.proto.close()
                return
            self.container_id = msg["cid"]
            self.proto.max_frame = P.MAX_MESSAGE_BYTES
            self.reply(msg, definition)
            return
        container_id = None
        if msg.get("cid"):  # user code inside a container, calling its app's functions
            if not self.cp.container_credentials_ok(msg["cid"], str(msg.get("ctoken", ""))):
                self.reply_error(msg, "auth", "unknown container or wrong container token")
                self.proto.close()
                return
            container_id = msg["cid"]
        elif self.network:  # the installation token never travels over the network
            self.reply_error(msg, "auth", "over TCP the control plane accepts containers' credentials only; "
                                          "admin clients connect to its Unix socket")
            self.proto.close()
            return
        elif not secrets.compare_digest(str(msg.get("token", "")), self.cp.token):
            self.reply_error(
                msg, "auth", "the control plane refused the token; the client must read it from the same state directory"
            )
            self.proto.close()
            return
        self.peer = Peer(self.proto, container_id=container_id)
        self.proto.max_frame = P.MAX_MESSAGE_BYTES
        self.reply(msg, {"version": P.PROTOCOL_VERSION})

    def _refuse(self, msg: dict[str, Any], why: str) -> None:
        assert self.peer is not None  # called only after the hello
        log.warning("refused %s from the user code of container %s: %s", msg.get("t"), self.peer.container_id, why)
        if "id" in msg:
            self.reply_error(msg, "auth", why)
        elif msg.get("t") == P.CALL:  # a call sent without a request id waits for its outputs instead
            err = {"code": "auth", "msg": why}
            items = [[i[0], ERROR, err] for i in msg.get("inputs") or ()] or [[0, ERROR, err]]
            self.proto.send({"t": P.OUTPUTS, "call": msg.get("call"), "items": items})

    def _client_message(self, msg: dict[str, Any]) -> None:
        assert self.peer is not None  # called only after the hello
        t = msg["t"]
        cp = self.cp
        if t == P.CALL:
            if msg["fid"] not in cp.functions and "id" in msg:
                self.reply_error(msg, "not_found", f"function {msg['fid']} is not running (its app was stopped)")
                return
            refused = cp.create_call(self.peer, msg, answer="id" not in msg)
            if "id" in msg:
                if refused:
                    self.reply_error(msg, "invalid", refused)
                else:
                    self.reply(msg, msg["call"])
        elif t == P.MAP_PUT:
            if msg["call"] not in cp.calls:
                text = f"no map call {msg['call']} is running (it finished, was cancelled, or never started)"
                if "id" in msg:
                    self.reply_error(msg, "not_found", text)
                else:
                    cp._refuse(self.peer, msg["call"], msg["inputs"], "not_found", text)
                return
            cp.put_inputs(self.peer, msg)
        elif t == P.SANDBOX and msg.get("op") in ("stdin", "ack"):
            cp.sandboxes.notify(self.peer, msg)
        elif t == P.APP_CREATE:
            self.reply(msg, cp.create_app(self.peer, msg))
        elif t in _ASYNC:
            cp.spawn(self._answer(msg, _ASYNC[t](cp, self.peer, msg)))
        elif t in _LOOKUPS:
            try:
                self.reply(msg, _LOOKUPS[t](cp, self.peer, msg))
            except LookupError as exc:
                self.reply_error(msg, "not_found", str(exc))
            except Error as exc:
                self.reply_error(msg, code_of(exc), str(exc))
        elif t == P.FUNCTION_BIND:
            try:
                self.reply(msg, cp.bind_function(msg))
            except LookupError as exc:
                self.reply_error(msg, "not_found", str(exc))
            except Error as exc:
                self.reply_error(msg, code_of(exc), str(exc))
        elif t == P.APP_STOP:
            cp.stop_app(msg["app_id"], "stopped by its client")
            self.peer.apps.discard(msg["app_id"])
            cp.spawn(self._app_stop(msg))
        elif t == P.CALL_GET:
            cp.spawn(self._call_get(msg))
        elif t == P.CALL_CANCEL:
            cp.cancel_call(msg["call"])
            self.reply(msg)
        elif t == P.IMAGE_BUILD:
            cp.spawn(self._image_build(msg))
        elif t == P.SERVER_STATUS:
            self.reply(msg, cp.status())
        elif t == P.CONTAINER_LIST:
            self.reply(msg, cp.container_list())
        elif t == P.DASHBOARD:
            if cp.dashboard is None:
                self.reply_error(msg, "not_found", "this control plane serves no dashboard")
            else:
                self.reply(msg, cp.dashboard.info())
        elif t == P.CONTAINER_STOP and msg["container_id"] in cp.sandboxes.by_id:
            cp.sandboxes.end(cp.sandboxes.by_id[msg["container_id"]], "terminated")
            self.reply(msg)
        elif t == P.CONTAINER_STOP:
            if not cp.stop_container(msg["container_id"], "stopped by the user"):
                self.reply_error(msg, "not_found", f"no running container {msg['container_id']}")
            else:
                self.reply(msg)
        elif t == P.SERVER_SHUTDOWN:
            self.reply(msg)
            cp.shutdown_requested.set()
        elif t == P.PING:  # the client checks that the control plane still answers (liveness)
            self.proto.send({"t": P.PONG})
        elif t == P.PONG:
            pass
        else:
            self.reply_error(msg, "invalid", f"unknown message type {t!r}")

    async def _answer(self, msg: dict[str, Any], work: Any) -> None:
        try:
            value = await work
        except LookupError as exc:
            self.reply_error(msg, "not_found", str(exc))
        except Error as exc:
            self.reply_error(msg, code_of(exc), str(exc))
        except Exception as exc:
            log.exception("error handling %s", msg.get("t"))
            self.reply_error(msg, "internal", f"{type(exc).__name__}: {exc}")
        else:
            self.reply(msg, value)

    async def _app_stop(self, msg: dict[str, Any]) -> None:
        # Reply once the app's containers have exited, so that the client has seen what their exit
        # hooks printed (a container that ignores SIGTERM is killed after the grace period).
        await self.cp.wait_app_stopped(msg["app_id"], STOP_GRACE_SECONDS + 5)
        self.reply(msg)

    async def _image_build(self, msg: dict[str, Any]) -> None:
        proto = self.proto

        def on_log(image: str, line: str, fd: int) -> None:
            proto.send({"t": P.LOG, "app": None, "fn": "image", "cid": image, "fd": fd, "data": line})

        try:
            ids = await self.cp.build_images(msg["images"], on_log)
        except (ImageBuildFailed, ImageUnsupported) as exc:
            self.reply_error(msg, exc.code, str(exc))
        except Error as exc:  # a named secret of a build step that does not exist
            self.reply_error(msg, code_of(exc), str(exc))
        except LookupError as exc:
            self.reply_error(msg, "not_found", str(exc))
        except Exception as exc:
            log.exception("image build failed")
            self.reply_error(msg, "image_build", f"Image build failed: {type(exc).__name__}: {exc}")
        else:
            self.reply(msg, ids)

    async def _call_get(self, msg: dict[str, Any]) -> None:
        try:
            result = await self.cp.get_call(msg["call"], msg.get("timeout"))
        except KeyError:
            self.reply_error(msg, "not_found", f"no function call with id {msg['call']}")
            return
        self.reply(msg, result)

    def on_close(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.cp.peer_closed(self.peer)
            self.cp.sandboxes.peer_closed(self.peer)
        if self.container_id is not None:
            self.cp.container_closed(self.container_id)
        if self.sandbox_id is not None:
            self.cp.sandboxes.agent_closed(self.sandbox_id)


async def serve(cp: ControlPlane, path: str) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    return await loop.create_unix_server(lambda: Connection(cp).proto, path)


async def serve_tcp(cp: ControlPlane, host: str, port: int) -> asyncio.Server:
    """The same protocol on TCP, for containers on other machines: only their own credentials are
    accepted there (a container's hello, or user code's with its container's token)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: Connection(cp, network=True).proto, host, port)
