"""What the SDK's two connections to the control plane do alike: the event loop's `Client` (`_client`)
and a thread's blocking `SyncChannel` (`_syncchan`) open with the same hello and raise the same errors
for a refused hello, a failed connect and a lost connection. (Both watch for a silent control plane
with `_liveness.SilenceWatch`.)"""

from __future__ import annotations

import os

from . import _config, _context
from . import _protocol as P
from .exception import AuthError, ConnectionError, ExecutionError


def hello_message(token: str) -> P.Hello:
    """A client's hello: with the installation token, or, from user code inside a container, with that
    container's own credentials (it may then call the functions of its app)."""
    if os.environ.get(P.ENV_IS_REMOTE) == "1":
        if _context.container is None:
            raise ExecutionError("This process runs inside a container but is not its runtime's; it cannot call functions.")
        cid, ctoken, _ = _context.container
        return P.Hello(role="client", cid=cid, ctoken=ctoken, v=P.PROTOCOL_VERSION)
    return P.Hello(role="client", token=token, v=P.PROTOCOL_VERSION)


def hello_refused(why: object) -> AuthError:
    return AuthError(f"{why}. The token in {_config.token_path()} does not match the running control plane's.")


def could_not_connect(address: str, exc: BaseException) -> ConnectionError:
    return ConnectionError(f"Could not connect to the Homeport control plane at {address}: {exc}")


def connection_lost(during: str | None = None) -> ConnectionError:
    """The control plane closed the connection (it stopped) or it broke; `during`: what was going on."""
    where = f" during {during}" if during else ""
    return ConnectionError(f"The connection to the Homeport control plane was lost{where}.")
