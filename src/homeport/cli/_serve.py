"""`homeport serve app.py`: run an app's web endpoints and reload them when its source files change.

The app runs in a child process (a fresh import of the program each time, like Modal's serve). On a
change the new child starts first and, once its app is running, takes over the endpoints' URLs (they
belong to the endpoints' labels, not to one app), and only then is the old child stopped: a browser
tab pointed at the URL keeps working across reloads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

READY = b"ready\n"
CHILD_START_TIMEOUT = 600.0  # image builds happen here
LOST_CONTROL_PLANE = 75  # a child's exit code: its connection to the control plane was lost


def _claim(ref: str, module_mode: bool):
    """One `homeport serve` per program: a second one of the same program would take over its URLs
    and stop them when it ends. The lock (held by this process, released when it exits) says who serves."""
    import fcntl
    import hashlib

    from .. import _config

    key = ref.partition("::")[0] if module_mode else str(Path(ref.partition("::")[0]).resolve())
    folder = Path(_config.state_dir()) / "serve"
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".lock"), "a+")  # held while serving
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        who = f.read().strip() or "another process"
        f.close()
        raise click.ClickException(f"{key} is already being served (by {who}): stop that `homeport serve` first; "
                                   "two would share its URLs.") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    return f


def serve_app(ref: str, module_mode: bool, timeout: float | None) -> None:
    watch_dir = _watch_dir(ref, module_mode)
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    lock = _claim(ref, module_mode)  # noqa: F841 - held until this process exits
    child = _start_child(ref, module_mode, first=True)
    if child is None:
        raise click.ClickException("The app did not start; see the output above.")
    console.print(f"[green]✓[/green] Serving; watching {watch_dir} for changes (Ctrl-C to stop).")
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set) if timeout is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    current = [child]
    lost: list[int] = []

    def monitor() -> None:  # the serving child ended by itself (its control plane went away): say so
        while not stop.wait(0.2):
            c = current[0]
            if c.poll() is not None and c is current[0]:
                lost.append(c.returncode)
                stop.set()

    threading.Thread(target=monitor, name="homeport-serve-monitor", daemon=True).start()
    try:
        for changes in _watch(watch_dir, stop):
            names = sorted({os.path.relpath(p, watch_dir) for _, p in changes})
            console.print(f"[yellow]↻[/yellow] {', '.join(names[:3])}{' ...' if len(names) > 3 else ''} changed: reloading")
            new = _start_child(ref, module_mode, first=False)
            if new is None:
                console.print("[red]⨯[/red] The changed app did not start; still serving the previous version.")
                continue
            old, current[0] = current[0], new
            _stop_child(old)
            console.print("[green]✓[/green] Reloaded.")
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if timer is not None:
            timer.cancel()
        _stop_child(current[0])
    if lost:
        why = ("the connection to the control plane was lost (it was stopped)" if lost[0] == LOST_CONTROL_PLANE
               else f"the app's process exited (code {lost[0]})")
        raise click.ClickException(f"No longer serving: {why}. Its endpoints do not answer; start the control "
                                   "plane (`homeport server start`) and run `homeport serve` again.")
    console.print("[green]✓[/green] Stopped serving.")


def _watch_dir(ref: str, module_mode: bool) -> str:
    path_part = ref.partition("::")[0]
    if module_mode:
        import importlib.util

        spec = importlib.util.find_spec(path_part)
        if spec is None or spec.origin is None:
            raise click.ClickException(f"No module named {path_part!r}")
        return str(Path(spec.origin).resolve().parent)
    path = Path(path_part).resolve()
    if not path.exists():
        raise click.ClickException(f"No such file: {path_part}")
    return str(path.parent)


def _watch(directory: str, stop: threading.Event):
    from watchfiles import PythonFilter, watch

    from .. import _config

    # Homeport's own state (image environments, logs) may live under the app's directory.
    ignore = [str(_config.state_dir())]
    yield from watch(directory, watch_filter=PythonFilter(ignore_paths=ignore), stop_event=stop, debounce=300,
                     step=100, rust_timeout=500, yield_on_timeout=False)


def _start_child(ref: str, module_mode: bool, first: bool) -> subprocess.Popen | None:
    """Start the app in a child; return it once its app is running, or None if it failed."""
    r, w = os.pipe()
    argv = [sys.executable, "-m", "homeport.cli._serve", ref, str(w)]
    if module_mode:
        argv.append("-m")
    if not first:
        argv.append("--reload")
    child = subprocess.Popen(argv, pass_fds=(w,))
    os.close(w)
    with os.fdopen(r, "rb") as ready:
        # The child writes READY once its app runs, or closes the pipe (exits) if it cannot.
        got = ready.readline()
    if got == READY:
        return child
    try:
        child.wait(CHILD_START_TIMEOUT)
    except subprocess.TimeoutExpired:
        _stop_child(child)
    return None


def _stop_child(child: subprocess.Popen) -> None:
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)  # the child's `app.run()` ends: its app stops, containers exit
    try:
        child.wait(30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def child_main(argv: list[str]) -> None:
    """The child: import the program, run its app, say it is ready, wait to be interrupted."""
    ref, fd = argv[0], int(argv[1])
    module_mode, reload = "-m" in argv[2:], "--reload" in argv[2:]
    # SIGTERM (from `homeport serve`, or when it dies) and Ctrl-C both end the app the same way, even
    # where SIGINT was inherited ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    _end_with_parent()
    from .. import _protocol as P
    from ._run import find_app, import_program

    os.environ.setdefault(P.ENV_MODAL_ALIAS, "1")
    ready = os.fdopen(fd, "wb", buffering=0)
    module, _ = import_program(ref, module_mode)
    app = find_app(module)
    if reload:
        app._print_urls = False
    try:
        with app.run():
            ready.write(READY)
            ready.close()
            from .._client import Client

            while True:  # until interrupted, or the control plane goes away (then the parent says so)
                time.sleep(0.25)
                client = Client._instance
                if client is None or client.closed:
                    sys.exit(LOST_CONTROL_PLANE)
    except KeyboardInterrupt:
        pass


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _end_with_parent() -> None:
    """Be interrupted (and stop the app) when `homeport serve` itself dies, however it dies."""
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the signal was armed
        raise KeyboardInterrupt


if __name__ == "__main__":
    child_main(sys.argv[1:])
