"""Connections into the control plane: authentication and dispatch of messages to the services."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from .. import _protocol as P
from .._wire import FramedProtocol
from ..exception import Error, code_of
from . import dictqueue
from .access import container_refusal
from .calls import error_outputs
from .images import ImageBuildFailed, ImageUnsupported
from .records import STOP_GRACE_SECONDS, Peer
from .secrets import SecretStore
from .services import ControlPlane
from .volumes import VolumeStore, volume_op

log = logging.getLogger("homeport.server.api")

# The largest frame accepted before a connection has authenticated (a hello is a few hundred bytes):
# anyone who can reach the socket, a container included, must not make the control plane allocate.
PRE_AUTH_MAX_FRAME = 64 << 10
_PONG = P.Pong()


# Each handler takes the checked request (its message type, `homeport._protocol.messages`).
_LOOKUPS: dict[str, Callable[[ControlPlane, Peer, Any], Any]] = {
    P.APP_LOOKUP: lambda cp, peer, req: cp.app_service.lookup_app(req),
    P.APP_LIST: lambda cp, peer, req: cp.app_service.list_apps(),
    P.APP_HISTORY: lambda cp, peer, req: cp.app_service.app_history(req.name),
    P.APP_LOGS: lambda cp, peer, req: cp.log_feed.subscribe_logs(peer, req.app_id),
    P.LOG_QUERY: lambda cp, peer, req: cp.log_feed.query_logs(req),
    P.CONTAINER_EXEC_INFO: lambda cp, peer, req: cp.container_service.container_exec_info(req.container_id),
    P.FUNCTION_LOOKUP: lambda cp, peer, req: cp.app_service.lookup_function(req),
    P.SECRET_CREATE: lambda cp, peer, req: _secrets(cp).create(req.name, req.values, req.overwrite),
    P.SECRET_LIST: lambda cp, peer, req: _secrets(cp).list(),
    P.SECRET_DELETE: lambda cp, peer, req: _secrets(cp).delete(req.name),
    P.VOLUME: lambda cp, peer, req: volume_op(_volumes(cp), req),
    P.PROXY_TOKEN: lambda cp, peer, req: _proxy_token(cp, req),
}
# Requests answered once their work is done (they open gateway ports).
_ASYNC: dict[str, Callable[[ControlPlane, Peer, Any], Awaitable[Any]]] = {
    P.APP_PUBLISH: lambda cp, peer, req: cp.app_service.publish_app(req),
    P.APP_DEPLOY: lambda cp, peer, req: cp.app_service.deploy_app_web(peer, req),
    P.TUNNEL: lambda cp, peer, req: cp.container_service.tunnel_op(peer, req),
    P.APP_ROLLBACK: lambda cp, peer, req: cp.app_service.rollback_app(peer, req),
}


def _secrets(cp: ControlPlane) -> SecretStore:
    if cp.secrets is None:
        raise LookupError("secrets are not available on this control plane")
    return cp.secrets


def _volumes(cp: ControlPlane) -> VolumeStore:
    if cp.volumes is None:
        raise LookupError("volumes are not available on this control plane")
    return cp.volumes


def _proxy_token(cp: ControlPlane, req: P.ProxyToken) -> Any:
    web = cp.web
    if web is None:
        raise LookupError("web endpoints are not available on this control plane")
    if req.op == "create":
        return web.create_token()
    if req.op == "list":
        return web.list_tokens()
    if req.op == "delete":
        return web.delete_token(req.token_id or "")
    raise LookupError(f"unknown proxy token operation {req.op!r}")


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
        self.proto.send(P.Result(ok=False, code=P.errors.INVALID,
                                 msg=f"a message of {n} bytes is larger than the {limit} bytes allowed {when}; "
                                     "the control plane closes this connection"))

    def reply(self, msg: dict[str, Any] | P.Request | P.SandboxRequest, value: Any = None) -> None:
        self.proto.send(P.Result(id=msg["id"] if isinstance(msg, dict) else msg.id, ok=True, v=value))

    def reply_error(self, msg: dict[str, Any] | P.Request | P.SandboxRequest, code: str, text: str) -> None:
        rid = msg.get("id") if isinstance(msg, dict) else msg.id
        self.proto.send(P.Result(id=rid if isinstance(rid, (int, str)) else None, ok=False, code=code, msg=text))

    def on_message(self, msg: Any) -> None:
        if self.container_id is not None:  # decoded as its type (`P.decode_from_container`)
            try:
                self.cp.container_service.container_message(self.container_id, msg)
            except Exception:  # the runtime's connection carries user code's writes too: never fatal
                log.warning("container %s sent a malformed %r message", self.container_id, msg.t, exc_info=True)
            return
        if type(msg) is P.MapPut or type(msg) is P.Call:  # decoded as its type (`P.decode_from_client`)
            assert self.peer is not None  # (only a client past its hello decodes so)
            self._checked_client_message({}, msg)
            return
        if not isinstance(msg, dict):
            self.reply_error({}, P.errors.INVALID, f"malformed message: a message must be a map, not {type(msg).__name__}")
            self.proto.close()
            return
        if self.sandbox_id is not None:
            self.cp.sandboxes.agent_message(self.sandbox_id, msg)
            return
        if self.peer is None:
            try:
                self._hello(msg)
            except Exception:
                log.warning("refused a malformed hello", exc_info=True)
                self.reply_error(msg, P.errors.AUTH, "malformed hello")
                self.proto.close()
            return
        try:  # a message that does not decode as its type is answered, naming the field
            req = P.check_client(msg)
        except P.MalformedMessage as exc:
            log.warning("refused a malformed message: %s", exc)
            if "id" in msg:
                self.reply_error(msg, P.errors.INVALID, str(exc))
            return
        self._checked_client_message(msg, req)

    def _checked_client_message(self, msg: dict[str, Any], req: P.ClientRequest | P.SandboxRequest) -> None:
        """A client's request `req`, checked as its type (`msg`: the map it came as, if it came as one)."""
        assert self.peer is not None  # called only after the hello
        try:
            if self.peer.container_id is not None:
                why = container_refusal(self.cp, self.peer.container_id, req)
                if why is not None:
                    self._refuse(req, why)
                    return
            self._client_message(msg, req)
        except Exception as exc:
            log.exception("error handling %s", req.t)
            if "id" in msg:
                self.reply_error(msg, P.errors.INTERNAL, f"{type(exc).__name__}: {exc}")
            elif isinstance(req, P.Request) and req.id is not None:
                self.reply_error(req, P.errors.INTERNAL, f"{type(exc).__name__}: {exc}")

    def _hello(self, msg: dict[str, Any]) -> None:
        try:  # decoded as its type: a field of the wrong type or a missing one is a malformed hello
            hello = P.check_hello(msg)
        except P.MalformedMessage as exc:
            log.warning("refused a malformed hello: %s", exc)
            self.reply_error(msg, P.errors.AUTH, "malformed hello")
            self.proto.close()
            return
        if hello is None:
            self.reply_error(msg, P.errors.AUTH, "the first message must be a hello")
            self.proto.close()
            return
        if hello.role == "sandbox":
            if hello.cid is None or not self.cp.sandboxes.agent_hello(self.proto, hello):
                self.reply_error(hello, P.errors.AUTH, "unknown sandbox or wrong token")
                self.proto.close()
                return
            self.sandbox_id = hello.cid
            self.proto.max_frame = P.MAX_MESSAGE_BYTES  # its output comes in chunks of up to 1 MiB, files whole
            self.reply(hello, None)
            return
        if hello.role == "container":
            definition = self.cp.container_service.container_hello(self.proto, hello)
            if hello.cid is None or definition is None:
                self.reply_error(hello, P.errors.AUTH, "unknown container or wrong container token")
                self.proto.close()
                return
            self.container_id = hello.cid
            self.proto.decode = P.decode_from_container  # what follows is typed, checked as it decodes
            self.proto.max_frame = P.MAX_MESSAGE_BYTES
            self.reply(hello, definition)
            return
        container_id = None
        if hello.cid:  # user code inside a container, calling its app's functions
            if not self.cp.container_service.container_credentials_ok(hello.cid, hello.ctoken or ""):
                self.reply_error(hello, P.errors.AUTH, "unknown container or wrong container token")
                self.proto.close()
                return
            container_id = hello.cid
        elif self.network:  # the installation token never travels over the network
            self.reply_error(hello, P.errors.AUTH, "over TCP the control plane accepts containers' credentials "
                                                   "only; admin clients connect to its Unix socket")
            self.proto.close()
            return
        elif not secrets.compare_digest(hello.token or "", self.cp.token):
            self.reply_error(
                hello, P.errors.AUTH,
                "the control plane refused the token; the client must read it from the same state directory"
            )
            self.proto.close()
            return
        self.peer = Peer(self.proto, container_id=container_id)
        self.proto.max_frame = P.MAX_MESSAGE_BYTES
        self.proto.decode = P.decode_from_client  # a call or a map's inputs come typed (the rest as maps)
        self.reply(hello, {"version": P.PROTOCOL_VERSION})

    def _refuse(self, req: P.ClientRequest | P.SandboxRequest, why: str) -> None:
        assert self.peer is not None  # called only after the hello
        log.warning("refused %s from the user code of container %s: %s", req.t, self.peer.container_id, why)
        if isinstance(req, (P.Request, P.SandboxRequest)) and req.id is not None:
            self.reply_error(req, P.errors.AUTH, why)
        elif isinstance(req, P.Call):  # a call sent without a request id waits for its outputs instead
            self.proto.send(P.Outputs(call=req.call, items=error_outputs(req.inputs, {"code": P.errors.AUTH, "msg": why})))

    def _client_message(self, msg: dict[str, Any], req: P.ClientRequest | P.SandboxRequest) -> None:
        """`req` is the request checked as its type (a sandbox operation as its operation's); `msg`, the
        map it came as, is what a Dict or Queue operation is checked from as its own type."""
        assert self.peer is not None  # called only after the hello
        t = req.t
        cp = self.cp
        if isinstance(req, P.Call):
            if req.fid not in cp.functions and req.id is not None:
                self.reply_error(req, P.errors.NOT_FOUND, f"function {req.fid} is not running (its app was stopped)")
                return
            refused = cp.call_service.create_call(self.peer, req, answer=req.id is None)
            if req.id is not None:
                if refused:
                    self.reply_error(req, P.errors.INVALID, refused)
                else:
                    self.reply(req, req.call)
        elif isinstance(req, P.MapPut):
            if req.call not in cp.calls:
                text = f"no map call {req.call} is running (it finished, was cancelled, or never started)"
                if req.id is not None:
                    self.reply_error(req, P.errors.NOT_FOUND, text)
                else:
                    cp.call_service.refuse(self.peer, req.call, req.inputs, P.errors.NOT_FOUND, text)
                return
            cp.call_service.put_inputs(self.peer, req)
        elif isinstance(req, (P.SandboxStdin, P.SandboxAck)):
            cp.sandboxes.notify(self.peer, req)
        elif isinstance(req, P.SandboxRequest):
            cp.spawn(self._answer(msg, cp.sandboxes.op(self.peer, req)))
        elif isinstance(req, P.AppCreate):
            self.reply(req, cp.app_service.create_app(self.peer, req))
        elif t in _ASYNC:
            cp.spawn(self._answer(msg, _ASYNC[t](cp, self.peer, req)))
        elif isinstance(req, (P.DictOp, P.QueueOp)):  # a blocking get waits on the control plane for a put
            try:  # the operation's own fields, checked as the type its "op" names
                op = P.dictqueue.check_operation(t, msg)
            except P.MalformedMessage as exc:
                self.reply_error(msg, P.errors.INVALID, str(exc))
                return
            cp.spawn(self._answer(msg, dictqueue.handle(cp.dictqueue, self.peer, t, op)))
        elif t in _LOOKUPS:
            try:
                self.reply(msg, _LOOKUPS[t](cp, self.peer, req))
            except LookupError as exc:
                self.reply_error(msg, P.errors.NOT_FOUND, str(exc))
            except Error as exc:
                self.reply_error(msg, code_of(exc), str(exc))
        elif isinstance(req, P.FunctionBind):
            try:
                self.reply(msg, cp.function_setup.bind_function(req))
            except LookupError as exc:
                self.reply_error(msg, P.errors.NOT_FOUND, str(exc))
            except Error as exc:
                self.reply_error(msg, code_of(exc), str(exc))
        elif isinstance(req, P.AppStop):
            cp.app_service.stop_app(req.app_id, "stopped by its client")
            self.peer.apps.discard(req.app_id)
            cp.spawn(self._app_stop(req))
        elif isinstance(req, P.CallGet):
            cp.spawn(self._call_get(req))
        elif isinstance(req, P.CallCancel):
            cp.call_service.cancel_call(req.call)
            self.reply(msg)
        elif isinstance(req, P.ImageBuild):
            cp.spawn(self._image_build(req))
        elif t == P.SERVER_STATUS:
            self.reply(msg, cp.status())
        elif t == P.CONTAINER_LIST:
            self.reply(msg, cp.container_service.container_list())
        elif t == P.DASHBOARD:
            if cp.dashboard is None:
                self.reply_error(msg, P.errors.NOT_FOUND, "this control plane serves no dashboard")
            else:
                self.reply(msg, cp.dashboard.info())
        elif isinstance(req, P.ContainerStop) and req.container_id in cp.sandboxes.by_id:
            cp.sandboxes.end(cp.sandboxes.by_id[req.container_id], "terminated")
            self.reply(msg)
        elif isinstance(req, P.ContainerStop):
            if not cp.executor.stop_container(req.container_id, "stopped by the user"):
                self.reply_error(msg, P.errors.NOT_FOUND, f"no running container {req.container_id}")
            else:
                self.reply(msg)
        elif t == P.SERVER_SHUTDOWN:
            self.reply(msg)
            cp.shutdown_requested.set()
        elif t == P.PING:  # the client checks that the control plane still answers (liveness)
            self.proto.send(_PONG)
        elif t == P.PONG:
            pass
        else:
            self.reply_error(msg, P.errors.INVALID, f"unknown message type {t!r}")

    async def _answer(self, msg: dict[str, Any], work: Any) -> None:
        try:
            value = await work
        except LookupError as exc:
            self.reply_error(msg, P.errors.NOT_FOUND, str(exc))
        except Error as exc:
            self.reply_error(msg, code_of(exc), str(exc))
        except Exception as exc:
            log.exception("error handling %s", msg.get("t"))
            self.reply_error(msg, P.errors.INTERNAL, f"{type(exc).__name__}: {exc}")
        else:
            self.reply(msg, value)

    async def _app_stop(self, msg: P.AppStop) -> None:
        # Reply once the app's containers have exited, so that the client has seen what their exit
        # hooks printed (a container that ignores SIGTERM is killed after the grace period).
        await self.cp.app_service.wait_app_stopped(msg.app_id, STOP_GRACE_SECONDS + 5)
        self.reply(msg)

    async def _image_build(self, msg: P.ImageBuild) -> None:
        proto = self.proto

        def on_log(image: str, line: str, fd: int) -> None:
            proto.send(P.Log(fn="image", cid=image, fd=fd, data=line))

        try:
            ids = await self.cp.function_setup.build_images(msg.images, on_log)
        except (ImageBuildFailed, ImageUnsupported) as exc:
            self.reply_error(msg, exc.code, str(exc))
        except Error as exc:  # a named secret of a build step that does not exist
            self.reply_error(msg, code_of(exc), str(exc))
        except LookupError as exc:
            self.reply_error(msg, P.errors.NOT_FOUND, str(exc))
        except Exception as exc:
            log.exception("image build failed")
            self.reply_error(msg, P.errors.IMAGE_BUILD, f"Image build failed: {type(exc).__name__}: {exc}")
        else:
            self.reply(msg, ids)

    async def _call_get(self, msg: P.CallGet) -> None:
        try:
            result = await self.cp.call_service.get_call(msg.call, msg.timeout)
        except KeyError:
            self.reply_error(msg, P.errors.NOT_FOUND, f"no function call with id {msg.call}")
            return
        self.reply(msg, result)

    def on_close(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.cp.peer_closed(self.peer)
            self.cp.sandboxes.peer_closed(self.peer)
        if self.container_id is not None:
            self.cp.container_service.container_closed(self.container_id)
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
