"""Sandbox programs as Modal users write them; each entrypoint prints `RESULT <json>` for its test."""

import json
import os
import time
import urllib.request

import modal

app = modal.App("sandboxes")

DRIVER = r"""
import json, sys, io, contextlib, traceback
scope = {}
for line in sys.stdin:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(json.loads(line)["code"], scope)
        reply = {"stdout": out.getvalue()}
    except Exception as exc:
        reply = {"stdout": out.getvalue(), "error": repr(exc)}
    print(json.dumps(reply), flush=True)
"""


def result(value):
    print("RESULT " + json.dumps(value), flush=True)


@app.local_entrypoint()
def interpreter():
    """A code interpreter: one long-lived Python process fed code over stdin, answering on stdout."""
    sb = modal.Sandbox.create(app=app)
    p = sb.exec("python", "-u", "-c", DRIVER, bufsize=1)
    lines = iter(p.stdout)
    answers = []
    for code in ["x = 6 * 7", "print(x)", "import os; print(os.getcwd() == '/' or True, x + 1)", "1 / 0"]:
        p.stdin.write(json.dumps({"code": code}) + "\n")
        p.stdin.drain()
        answers.append(json.loads(next(lines)))
    p.stdin.write_eof()
    p.stdin.drain()
    result({"answers": answers, "code": p.wait(), "rest": p.stdout.read()})
    sb.terminate()


@app.local_entrypoint()
def concurrent(rootfs: bool = False):
    """Several execs at once, each with its own streams; each waits for its own stdin."""
    image = modal.Image.debian_slim().run_commands("echo built > /etc/hp-sandbox-image") if rootfs else None
    sb = modal.Sandbox.create(app=app, image=image)
    cmds = {"python": ["python", "-c", "import sys; print('py', sys.stdin.read().strip())"],
            "sh": ["sh", "-c", "read x; echo sh $x; echo err-sh >&2"]}
    if rootfs:
        cmds["perl"] = ["perl", "-e", "my $x = <STDIN>; chomp $x; print \"perl $x\\n\""]
        cmds["cat"] = ["cat", "/etc/hp-sandbox-image"]
    procs = {k: sb.exec(*argv) for k, argv in cmds.items()}
    for name, p in reversed(list(procs.items())):  # the last started is fed first
        p.stdin.write(f"to-{name}\n")
        p.stdin.write_eof()
        p.stdin.drain()
    out = {name: [p.stdout.read(), p.stderr.read(), p.wait()] for name, p in procs.items()}
    result(out)
    sb.terminate()


@app.local_entrypoint()
def live():
    """Output arrives while the command still runs."""
    sb = modal.Sandbox.create(app=app)
    p = sb.exec("sh", "-c", "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.5; done")
    chunks = []
    running_at_first = None
    for chunk in p.stdout:
        if running_at_first is None:
            running_at_first = p.poll() is None
        chunks.append(chunk)
    b = sb.exec("sh", "-c", "printf 'a\\nb'; sleep 0.2; printf 'c\\nd\\n'", bufsize=1)
    lines = list(b.stdout)
    raw = sb.exec("printf", "\\377bytes", text=False)
    tty = sb.exec("sh", "-c", "tty; echo to-stderr >&2", pty=True)
    merged = sb.exec("sh", "-c", "echo out; echo err >&2", stderr=modal.stream_type.StreamType.STDOUT)
    quiet = sb.exec("sh", "-c", "echo out", stdout=modal.stream_type.StreamType.DEVNULL)
    result({"chunks": chunks, "running_at_first": running_at_first, "code": p.wait(), "lines": lines,
            "raw": list(raw.stdout.read()), "raw_is_bytes": isinstance(b"", type(raw.stdout.read())),
            "tty": tty.stdout.read(), "merged": sorted(merged.stdout.read().split()), "quiet": quiet.stdout.read()})
    sb.terminate()


@app.local_entrypoint()
def environment():
    """env= and secrets= of the sandbox and of one exec; the command's own stdin and stdout; idle_timeout."""
    sb = modal.Sandbox.create("sh", "-c", "cat; echo A=$A B=$B", app=app, env={"A": "1"},
                              secrets=[modal.Secret.from_dict({"B": "2"})], workdir="/work-here")
    sb.stdin.write("from stdin\n")
    sb.stdin.write_eof()
    sb.stdin.drain()
    sb.wait()
    out = {"main": sb.stdout.read(), "rc": sb.returncode}
    sb2 = modal.Sandbox.create(app=app, env={"A": "1"}, idle_timeout=2, workdir="/work-here")
    p = sb2.exec("sh", "-c", "echo A=$A C=$C D=$D $(pwd)", env={"C": "3"},
                 secrets=[modal.Secret.from_dict({"D": "4"})])
    out["exec"] = p.stdout.read()
    out["workdir_exec"] = sb2.exec("pwd", workdir="/tmp").stdout.read()
    try:
        sb2.wait()
    except modal.exception.SandboxTimeoutError:
        out["idle"] = sb2.returncode
    result(out)


@app.local_entrypoint()
def lifecycle(token: str = "hp-sbx"):
    """timeout -> 124 and SandboxTimeoutError; terminate -> 137; nothing it started survives."""
    out = {}
    sb = modal.Sandbox.create(app=app, timeout=3)
    sleeper = "python -c 'import time; time.sleep(300)'"  # named on its command line by the token
    p = sb.exec("sh", "-c", f"setsid {sleeper} {token}-t >/dev/null 2>&1 & echo started")
    out["started"] = p.stdout.read()
    out["poll_running"] = sb.poll()
    out["returncode_running"] = sb.returncode
    try:
        sb.wait()
        out["timeout_raised"] = None
    except modal.exception.SandboxTimeoutError as exc:
        out["timeout_raised"] = type(exc).__name__
    out["timeout_rc"] = sb.returncode
    sb2 = modal.Sandbox.create("python", "-c", "import time; time.sleep(300)", f"{token}-main", app=app)
    q = sb2.exec("sh", "-c", f"nohup {sleeper} {token}-x >/dev/null 2>&1 & echo ok")
    out["started2"] = q.stdout.read()
    long = sb2.exec("sleep", "300")
    print("PIDS-READY", flush=True)
    time.sleep(1)
    sb2.terminate()
    out["long_code"] = long.wait()
    try:
        sb2.wait()
        out["terminated_raised"] = None
    except modal.exception.SandboxTerminatedError as exc:
        out["terminated_raised"] = type(exc).__name__
    sb2.wait(raise_on_termination=False)
    out["terminate_rc"] = sb2.returncode
    exited = modal.Sandbox.create("sh", "-c", "echo bye; exit 7", app=app)
    exited.wait()
    out["exit_rc"] = exited.returncode
    out["exit_stdout"] = exited.stdout.read()
    e = modal.Sandbox.create(app=app)
    killed = e.exec("sh", "-c", "kill -9 $$")
    timed = e.exec("sleep", "30", timeout=1)
    out["killed"] = killed.wait()
    out["timed"] = timed.wait()
    try:
        _ = e.exec("true").returncode
        out["returncode_before_wait"] = None
    except modal.exception.InvalidError:
        out["returncode_before_wait"] = "InvalidError"
    out["rc_after_terminate_wait"] = e.terminate(wait=True)
    result(out)


@app.local_entrypoint()
def rm_rf(marker: str = ""):
    """`rm -rf /` in one sandbox; the host's marker file, the other sandbox and the control plane survive."""
    other = modal.Sandbox.create(app=app)
    other.exec("sh", "-c", "echo keep > /tmp/other-file").wait()
    victim = modal.Sandbox.create(app=app)
    rm = victim.exec("sh", "-c", "(rm -rf --no-preserve-root / 2>/dev/null); echo done; ls /tmp/other-file /bin/sh")  # its /tmp is its own
    out = {"rm": rm.stdout.read(), "rm_code": rm.wait()}
    out["marker_inside"] = victim.exec("cat", marker).stdout.read() if marker else None
    out["other_file"] = other.exec("cat", "/tmp/other-file").stdout.read()
    out["other_python"] = other.exec("python", "-c", "print(1 + 1)").stdout.read()
    result(out)
    victim.terminate()
    other.terminate()


NET_PROBE = r"""
import json, os, socket, sys, urllib.error, urllib.request
host, port = sys.argv[1], int(sys.argv[2])
proxy = os.environ.get("HTTP_PROXY")
def get(url, *handlers):
    try:
        with urllib.request.build_opener(*handlers).open(url, timeout=10) as r:
            return f"{r.status} {r.read().decode().strip()}"
    except urllib.error.HTTPError as e:
        return f"{e.code} {e.read().decode().strip()[:300]}"
    except Exception as e:
        return f"failed {type(e).__name__}"
out = {"http": get(f"http://{host}:{port}/")}
try:
    socket.create_connection((host, port), timeout=3).close()
    out["raw"] = "connected"
except OSError as e:
    out["raw"] = f"failed {type(e).__name__}"
if proxy:  # the machine's own loopback through the proxy; a TLS-style tunnel (CONNECT) to the host
    def ask(request):
        proxy_host, proxy_port = proxy.rsplit("/", 1)[1].split(":")
        s = socket.create_connection((proxy_host, int(proxy_port)), timeout=10)
        s.sendall(request.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return [data.split(b"\r\n")[0].decode(), data.rsplit(b"\r\n", 1)[-1].decode().strip()]
    out["loopback"] = ask(f"GET http://127.0.0.1:{port}/ HTTP/1.0\r\n\r\n")
    out["connect"] = ask(f"CONNECT {host}:{port} HTTP/1.1\r\n\r\nGET / HTTP/1.0\r\n\r\n")
print(json.dumps(out))
"""


@app.local_entrypoint()
def network(host: str = "", port: int = 0, rootfs: bool = False):
    """A sandbox's network: its own, with HTTP(S) out through the proxy; none with block_network=True;
    only what the allowlists name with them. `rootfs`: in an image with a root file system of its own."""
    image = modal.Image.debian_slim().run_commands("true") if rootfs else None
    out = {}
    for what, options in (("open", {}), ("blocked", {"block_network": True}),
                          ("cidr_refused", {"outbound_cidr_allowlist": ["10.0.0.0/8"]}),
                          ("cidr_allowed", {"outbound_cidr_allowlist": [f"{host}/32"]}),
                          ("domain_refused", {"outbound_domain_allowlist": ["example.com"]})):
        sb = modal.Sandbox.create(app=app, image=image, **options)
        p = sb.exec("python", "-c", NET_PROBE, host, str(port))
        text, err = p.stdout.read(), p.stderr.read()
        out[what] = json.loads(text) if text.strip() else {"error": err[-500:]}
        sb.terminate()
    result(out)


@app.local_entrypoint()
def tunnel():
    """An HTTP server in the sandbox, reached through its tunnel once the readiness probe passes."""
    sb = modal.Sandbox.create("python", "-m", "http.server", "8000", "--bind", "127.0.0.1", app=app,
                              encrypted_ports=[8000], workdir="/site",
                              readiness_probe=modal.Probe.with_tcp(8000))
    sb.filesystem.write_text("hello from the sandbox\n", "/site/index.html")
    sb.wait_until_ready(timeout=60)
    tunnels = sb.tunnels()
    url = tunnels[8000].url
    with urllib.request.urlopen(url + "/index.html", timeout=10) as r:
        body = r.read().decode()
    probe = modal.Sandbox.create(app=app, readiness_probe=modal.Probe.with_exec("test", "-f", "/tmp/ready"))
    probe.exec("sh", "-c", "sleep 0.5; touch /tmp/ready")
    probe.wait_until_ready(timeout=30)
    result({"url": url, "body": body, "ports": sorted(tunnels), "exec_probe": "ready"})
    sb.terminate()
    probe.terminate()


EGRESS_ABUSE = r"""
import glob, json, os, socket, sys
host, port, other = sys.argv[1], int(sys.argv[2]), sys.argv[3]
config = json.loads(open(f"/proc/{os.getppid()}/environ").read().split("HOMEPORT_SANDBOX=", 1)[1].split("\0")[0])
mine = config["egress"]
out = {}
# Its own proxy's socket is <shared directory>/<its id>/egress; the other's would be next to it.
shared = os.path.dirname(os.path.dirname(mine["socket"]))
for path in sorted({mine["socket"], os.path.join(shared, other, "egress"), *glob.glob(os.path.join(shared, "*", "egress"))}):
    key = "own" if path == mine["socket"] else "other"
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.sendall(mine["token"].encode() + f"\nGET http://{host}:{port}/ HTTP/1.0\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        out[key] = data.split(b"\r\n")[0].decode() or "closed"
    except OSError as exc:  # out of its view, or not its to use
        out[key] = type(exc).__name__
print(json.dumps(out))
"""


@app.local_entrypoint()
def egress_abuse(host: str = "", port: int = 0):
    """Code in a sandbox whose allowlist refuses the host tries the egress proxy of another sandbox,
    whose socket it can see, with the token it read from its agent."""
    walled = modal.Sandbox.create(app=app, outbound_cidr_allowlist=["10.0.0.0/8"])
    free = modal.Sandbox.create(app=app)
    p = walled.exec("python", "-c", EGRESS_ABUSE, host, str(port), free.object_id)
    text, err = p.stdout.read(), p.stderr.read()
    result(json.loads(text) if text.strip() else {"error": err[-800:]})
    walled.terminate()
    free.terminate()


@app.local_entrypoint()
def same_port():
    """Two sandboxes listen on one port, each reached through its own tunnel; a third takes inbound
    connections only from a network its clients are not in."""
    boxes = []
    for who, inbound in (("first", ["127.0.0.0/8"]), ("second", None), ("walled", ["10.0.0.0/8"])):
        sb = modal.Sandbox.create("python", "-m", "http.server", "8000", app=app, encrypted_ports=[8000],
                                  workdir="/site", inbound_cidr_allowlist=inbound,
                                  readiness_probe=modal.Probe.with_tcp(8000))
        sb.filesystem.write_text(f"{who}\n", "/site/index.html")
        boxes.append(sb)
    bodies = []
    for sb in boxes:
        sb.wait_until_ready(timeout=60)
        try:
            with urllib.request.urlopen(sb.tunnels()[8000].url + "/index.html", timeout=10) as r:
                bodies.append(r.read().decode())
        except Exception as exc:
            bodies.append(f"failed {type(exc).__name__}")
    result({"bodies": bodies, "rcs": [sb.poll() for sb in boxes]})
    for sb in boxes:
        sb.terminate()


@app.local_entrypoint()
def flood(mb: int = 200):
    """An exec writes far more than its reader takes for a while: the reader's memory stays small."""
    import psutil

    me = psutil.Process()
    sb = modal.Sandbox.create(app=app)
    base = me.memory_info().rss
    p = sb.exec("head", "-c", str(mb << 20), "/dev/zero", text=False)
    print("FLOOD-STARTED", flush=True)
    total, peak, slow_until = 0, 0, time.monotonic() + 10
    for chunk in p.stdout:
        total += len(chunk)
        if time.monotonic() < slow_until:
            time.sleep(0.2)  # a reader far behind the writer
        peak = max(peak, me.memory_info().rss - base)
    result({"total": total, "client_growth_mib": peak >> 20, "code": p.wait()})
    sb.terminate()


@app.local_entrypoint()
def unwatched_start():
    """A reader that reads one chunk of 50 MiB and leaves: its exec must run on without it."""
    kept = modal.App.lookup("sandboxes-kept", create_if_missing=True)
    sb = modal.Sandbox.create(app=kept, timeout=120)
    p = sb.exec("sh", "-c", "head -c 52428800 /dev/zero; touch /tmp/finished", text=False)
    first = next(iter(p.stdout))
    result({"id": sb.object_id, "first": len(first) > 0})


@app.local_entrypoint()
def unwatched_check(sandbox_id: str = ""):
    sb = modal.Sandbox.from_id(sandbox_id)
    deadline = time.monotonic() + 90
    finished = False
    while not finished and time.monotonic() < deadline:
        finished = sb.exec("test", "-f", "/tmp/finished").wait() == 0
        time.sleep(0.5)
    sb.terminate()
    result({"finished": finished})


@app.local_entrypoint()
def create_detached(name: str = "kept"):
    """The first of two programs: a sandbox of a deployed app, left running."""
    lookup = modal.App.lookup("sandboxes-deployed", create_if_missing=True)
    sb = modal.Sandbox.create(app=lookup, name=name, tags={"role": "worker"}, timeout=120)
    sb.exec("sh", "-c", "echo from-first > /tmp/state").wait()
    try:
        modal.Sandbox.create(app=lookup, name=name)
        dup = None
    except modal.exception.AlreadyExistsError:
        dup = "AlreadyExistsError"
    result({"id": sb.object_id, "dup": dup, "app_id": lookup.app_id})
    sb.detach()


@app.local_entrypoint()
def use_detached(sandbox_id: str = "", name: str = "kept", app_id: str = ""):
    """The second program: finds the sandbox by id, name and tags, uses it and terminates it."""
    sb = modal.Sandbox.from_id(sandbox_id)
    by_name = modal.Sandbox.from_name("sandboxes-deployed", name)
    tagged = [s.object_id for s in modal.Sandbox.list(app_id=app_id, tags={"role": "worker"})]
    sb.set_tags({"role": "done"})
    retagged = [s.object_id for s in modal.Sandbox.list(tags={"role": "worker"})]
    state = sb.exec("cat", "/tmp/state").stdout.read()
    sb.terminate()
    sb.wait(raise_on_termination=False)
    listed_after = [s.object_id for s in modal.Sandbox.list(app_id=app_id)]
    try:
        modal.Sandbox.from_id("sb-0000000000000000")
        unknown = None
    except modal.exception.NotFoundError:
        unknown = "NotFoundError"
    result({"same": by_name.object_id == sb.object_id, "tagged": tagged, "retagged": retagged, "state": state,
            "rc": sb.returncode, "listed_after": listed_after, "unknown": unknown})


@app.local_entrypoint()
def files():
    """sb.filesystem: files as the sandbox sees them."""
    import tempfile

    sb = modal.Sandbox.create(app=app)
    fs = sb.filesystem
    fs.make_directory("/tmp/a/b")
    fs.write_text("text", "/tmp/a/b/t.txt")
    fs.write_bytes(b"\x00\x01", "/tmp/a/bin")
    local = os.path.join(tempfile.mkdtemp(), "f")
    with open(local, "w") as f:
        f.write("local file")
    fs.copy_from_local(local, "/tmp/a/copied")
    fs.copy_to_local("/tmp/a/b/t.txt", local + ".back")
    out = {"text": fs.read_text("/tmp/a/b/t.txt"), "bytes": list(fs.read_bytes("/tmp/a/bin")),
           "listed": sorted(os.path.basename(e["path"]) for e in fs.list_files("/tmp/a")),
           "stat": fs.stat("/tmp/a/copied")["size"], "back": open(local + ".back").read(),
           "seen_by_exec": sb.exec("cat", "/tmp/a/copied").stdout.read()}
    fs.remove("/tmp/a", recursive=True)
    try:
        fs.read_text("/tmp/a/b/t.txt")
    except modal.exception.SandboxFilesystemNotFoundError:
        out["missing"] = "SandboxFilesystemNotFoundError"
    try:
        fs.write_text("x", "/etc/hp-should-not-exist")
    except modal.exception.SandboxFilesystemError as exc:
        out["host_write"] = type(exc).__name__
    result(out)
    sb.terminate()


@app.local_entrypoint()
def two_users(volume: str = "sb-users"):
    """A volume shared by two users inside a sandbox: one cannot read the other's files."""
    image = modal.Image.debian_slim().run_commands("useradd -m alice", "useradd -m bob")
    vol = modal.Volume.from_name(volume, create_if_missing=True)
    sb = modal.Sandbox.create(app=app, image=image, volumes={"/data": vol})
    setup = ("mkdir -p /data/alice /data/shared && chown alice /data/alice && chmod 700 /data/alice && "
             "chmod 1777 /data/shared")
    out = {"setup": sb.exec("sh", "-c", setup).wait()}
    out["alice_write"] = sb.exec("runuser", "-u", "alice", "--", "sh", "-c",
                                 "echo secret > /data/alice/s && echo pub > /data/shared/a && chmod 600 /data/shared/a").wait()
    bob = sb.exec("runuser", "-u", "bob", "--", "cat", "/data/alice/s")
    out["bob_read_private"] = [bob.wait(), bob.stderr.read()]
    bob2 = sb.exec("runuser", "-u", "bob", "--", "cat", "/data/shared/a")
    out["bob_read_shared_600"] = bob2.wait()
    bob3 = sb.exec("runuser", "-u", "bob", "--", "rm", "-f", "/data/shared/a")
    out["bob_delete_sticky"] = bob3.wait()
    out["alice_read"] = sb.exec("runuser", "-u", "alice", "--", "cat", "/data/alice/s").stdout.read()
    result(out)
    sb.terminate()


@app.function()
def inside() -> str:
    """A function that starts a sandbox of its own app (no `app=` inside a container)."""
    sb = modal.Sandbox.create()
    out = sb.exec("sh", "-c", "echo inner $MODAL_SANDBOX_ID").stdout.read()
    sb.terminate()
    return out.replace(sb.object_id, "<id>")


@app.function()
def touch_foreign(sandbox_id: str) -> str:
    """Code in a container reaching for a sandbox of another app, which is not deployed."""
    out = []
    for attempt in (lambda: modal.Sandbox.from_id(sandbox_id).exec("echo", "reached"),
                    lambda: modal.Sandbox.create(secrets=[modal.Secret.from_name("sandboxes-secret")]),
                    lambda: modal.Sandbox.create(volumes={"/v": modal.Volume.from_name("sandboxes-not-mine",
                                                                                       create_if_missing=True)})):
        try:
            attempt()
            out.append("reached")
        except modal.exception.Error as exc:
            out.append(type(exc).__name__)
    return " ".join(out)


@app.local_entrypoint()
def from_function():
    other = modal.App("sandboxes-other")
    with other.run(show_logs=False):
        foreign = modal.Sandbox.create(app=other)
        refused = touch_foreign.remote(foreign.object_id)
        foreign.terminate()
    result({"inside": inside.remote(), "foreign": refused})


@app.local_entrypoint()
async def aio():
    """The same API from async code: `.aio` forms and `async for`."""
    sb = await modal.Sandbox.create.aio(app=app)
    p = await sb.exec.aio("sh", "-c", "echo one; sleep 0.2; echo two")
    chunks = [chunk async for chunk in p.stdout]
    listed = [s.object_id async for s in modal.Sandbox.list.aio(app_id=app.app_id)]
    await sb.filesystem.write_text.aio("async", "/tmp/a")
    text = await sb.filesystem.read_text.aio("/tmp/a")
    code = await p.wait.aio()
    rc = await sb.terminate.aio(wait=True)
    result({"out": "".join(chunks), "code": code, "listed": sb.object_id in listed, "text": text, "rc": rc})


IMPERSONATE = r"""
import os, socket, struct, msgpack
env = dict(kv.split("=", 1) for kv in open(f"/proc/{os.getppid()}/environ").read().split("\0") if "=" in kv)
answers = {}
for role in ("sandbox", "client"):
    s = socket.socket(socket.AF_UNIX)
    s.connect(env["HOMEPORT_SERVER_ADDRESS"])
    hello = {"t": "hello", "role": role, "cid": env["HOMEPORT_CONTAINER_ID"], "token": env["HOMEPORT_CONTAINER_TOKEN"],
             "ctoken": env["HOMEPORT_CONTAINER_TOKEN"], "v": 1, "id": 1}
    body = msgpack.packb(hello, use_bin_type=True)
    s.sendall(struct.pack("!I", len(body)) + body)
    n = struct.unpack("!I", s.recv(4))[0]
    answers[role] = msgpack.unpackb(s.recv(n), raw=False).get("ok")
print(answers)
"""


@app.local_entrypoint()
def impersonate():
    """Code in a sandbox takes the agent's token from /proc and says hello as the agent, then as a client."""
    sb = modal.Sandbox.create(app=app)
    p = sb.exec("python", "-c", IMPERSONATE)
    result({"out": p.stdout.read(), "err": p.stderr.read()[-500:], "still_works": sb.exec("echo", "ok").stdout.read()})
    sb.terminate()


@app.local_entrypoint()
def app_stop():
    """Sandboxes of an ephemeral app end with it: print the ids, the test checks after the run."""
    sb = modal.Sandbox.create("sleep", "300", app=app)
    result({"id": sb.object_id})
