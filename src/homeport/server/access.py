"""What a connection authenticated as a container's user code may ask of the control plane.

A client holding the installation token may send every client message. User code inside a container
connects with that container's id and token instead (the runtime hands them over in `_context`), and
gets only what running its function needs:

- look up, bind and call the functions and classes of its own app, and of deployed apps
  (`Function.from_name`, `Cls.from_name`): FUNCTION_LOOKUP, FUNCTION_BIND, CALL, MAP_PUT;
- wait for and cancel calls of those apps: CALL_GET, CALL_CANCEL;
- read and write the volumes its function mounts: VOLUME (not list, delete or create others);
- use Dicts and Queues: DICT, QUEUE. Named ones are workspace-global in Modal, so a container may look
  up (and create, with `create_if_missing`) any named Dict or Queue and read and write it, and use an
  ephemeral one whose id it was given (ids are unguessable); it may not list or delete them.
- look up a deployed app by name, or create an empty one (`App.lookup(name, create_if_missing=True)`,
  where Modal's sandbox pools keep their sandboxes): APP_LOOKUP;
- create and drive sandboxes of its own app (and of deployed apps): SANDBOX. A sandbox's image comes
  as build steps, built confined, never steps that read the requester's local files
  (`sandbox_launch.container_image_refusal`), and never as an image id (another app's image, with its files).

Everything else (stopping the server, containers or apps, secrets, deploys, image builds, logs of
other apps ...) is refused with an `auth` error, so code running in one app cannot reach the rest of
the installation through the control plane.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

from .. import _protocol as P
from .._protocol.definition import FunctionDefinition
from .sandbox_launch import container_image_refusal

if TYPE_CHECKING:
    from .services import ControlPlane

# What is checked: a client's request decoded as its type, a sandbox operation as its operation's type.
Checked = Union[P.ClientRequest, P.SandboxRequest]  # noqa: UP007 - a runtime alias

CONTAINER_MESSAGES = frozenset(
    {P.FUNCTION_LOOKUP, P.FUNCTION_BIND, P.CALL, P.MAP_PUT, P.CALL_GET, P.CALL_CANCEL, P.VOLUME, P.DICT, P.QUEUE,
     P.SANDBOX, P.TUNNEL,  # a tunnel reaches only the container's own relay (checked in WebEndpoints.tunnel)
     P.APP_LOOKUP}  # a deployed app by name, made empty with create_if_missing (a home for sandboxes)
) | {P.PING, P.PONG}  # liveness: a client waiting on a call checks that the control plane answers
_DICT_QUEUE_REFUSED = frozenset({"list", "delete"})
_VOLUME_OPS = frozenset({"exists", "ls", "read", "put", "rm", "cp", "create"})


def container_refusal(cp: ControlPlane, container_id: str, req: Checked) -> str | None:
    """Why the user code of `container_id` may not send `req`, or None if it may.

    What does not exist is not refused here: the message goes on and gets its usual not-found answer.
    A sandbox operation that names no app is given the container's own (`app_id`).
    """
    t = req.t
    rec = cp.containers.get(container_id)
    if rec is None:
        return f"container {container_id} is no longer running, so its credentials are no longer valid"
    if t not in CONTAINER_MESSAGES:
        return (
            f"`{t}` is not allowed from code running inside a container: a container may only call the "
            "functions and classes of its own app and of deployed apps, and use the volumes its function "
            "mounts. Do this from outside the container (for example with the `homeport` CLI)."
        )
    own = rec.fn.app_id
    if isinstance(req, P.FunctionLookup):
        if req.app_id and req.app_id != own:
            return "a container may only look up functions of its own app, or of deployed apps by name"
        return None
    if isinstance(req, (P.Call, P.FunctionBind)):
        fn = cp.functions.get(req.fid)
        return None if fn is None else _foreign(cp, own, fn.app_id, "call")
    if isinstance(req, (P.MapPut, P.CallGet, P.CallCancel)):
        call = cp.calls.get(req.call)
        app_id = call.fn.app_id if call is not None else cp.state.call_app_id(req.call)
        return None if app_id is None else _foreign(cp, own, app_id, "use a call of")
    if isinstance(req, P.Volume):
        if req.op not in _VOLUME_OPS or (req.op == "create" and not req.exist_ok):
            return f"volume operation `{req.op}` is not allowed from code running inside a container"
        return _unmounted(cp, rec.fn.defn, req.name)
    if isinstance(req, (P.DictOp, P.QueueOp)) and req.op in _DICT_QUEUE_REFUSED:
        return f"{t} operation `{req.op}` is not allowed from code running inside a container"
    if isinstance(req, P.SandboxRequest):
        return _sandbox_refusal(cp, own, rec.fn.defn, req)
    return None


def _sandbox_refusal(cp: ControlPlane, own: str, definition: FunctionDefinition, req: P.SandboxRequest) -> str | None:
    """Its own app's sandboxes (and deployed apps', as its calls may reach theirs), with no more than its
    function has: no named secrets (their values are the function's to pass, `Secret.from_dict`), only
    the volumes it mounts, an image only as build steps that read nothing of the host."""
    if isinstance(req, (P.SandboxCreate, P.SandboxExec)) and req.secret_refs:
        return ("a container may not give a sandbox named secrets (`Secret.from_name`); pass the values its "
                "function has with `modal.Secret.from_dict(...)`")
    if isinstance(req, P.SandboxCreate):
        for ref in req.volumes or ():
            why = _unmounted(cp, definition, ref.get("name"))
            if why is not None:
                return why
        if req.image_id is not None:
            return "a container gives its sandbox an image by its build steps (`image=`), not by an image id"
        if req.image is not None:
            why = container_image_refusal(req.image)  # its steps, marked to be built confined
            if why is not None:
                return why
    if isinstance(req, (P.SandboxCreate, P.SandboxList)):
        if not req.app_id:
            req.app_id = own  # its own app's sandboxes (`Sandbox.create()` without `app=` in a container)
        return _foreign(cp, own, req.app_id, "use the sandboxes of")
    if isinstance(req, P.SandboxFromName):
        return None  # a deployed app's, by name
    sandbox = cp.sandboxes.by_id.get(req.sandbox or "")
    return None if sandbox is None else _foreign(cp, own, sandbox.app_id, "use a sandbox of")


def _foreign(cp: ControlPlane, own: str, app_id: str, what: str) -> str | None:
    if app_id == own:
        return None
    app = cp.apps.get(app_id)
    if app is not None and app.get("state") == "deployed":
        return None
    return f"a container may not {what} another app that is not deployed ({app_id})"


def _unmounted(cp: ControlPlane, definition: FunctionDefinition, name: Any) -> str | None:
    """Why the volume `name` is not one the function mounts, or None if it is."""
    mounted = {host for host, _target in definition.mounts}
    try:
        host = str(cp.volumes.resolve(name, False)) if cp.volumes is not None and name else None
    except Exception:
        host = None
    if host is None or host not in mounted:
        return f"a container may only use the volumes its function mounts, and '{name}' is not one of them"
    return None
