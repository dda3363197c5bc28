"""A pool of warm sandboxes kept by functions, as in Modal's `sandbox_pool` example: a function creates
each sandbox with an image of its own (built by the control plane from inside a container), waits
until its server answers, and hands out its tunnel URL; another function terminates them.
Each entrypoint prints `RESULT <json>` for its test."""

import json
import urllib.request

import modal

app = modal.App("sandbox-pool")

SERVER_PORT = 8080


def sandbox_image(wheels: str) -> modal.Image:
    image = modal.Image.debian_slim().env({"POOL_FLAVOUR": "warm"})
    if wheels:
        image = image.pip_install("hp-pool-probe==0.1", find_links=wheels, extra_options="--no-index")
    return image


@app.function()
def add_sandbox(wheels: str = "") -> dict:
    # The sandboxes live in an app of their own, apart from the pool's logic (as in Modal's example).
    sandbox_app = modal.App.lookup("sandbox-pool-sandboxes", create_if_missing=True)
    sb = modal.Sandbox.create(
        "python", "-m", "http.server", str(SERVER_PORT),
        app=sandbox_app,
        image=sandbox_image(wheels),
        encrypted_ports=[SERVER_PORT],
        timeout=300,
        readiness_probe=modal.Probe.with_exec(
            "python", "-c", f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{SERVER_PORT}/')"),
    )
    sb.wait_until_ready(timeout=60)
    code = "import os; print(os.environ['POOL_FLAVOUR'])"
    if wheels:
        code += "; import hp_pool_probe; print(hp_pool_probe.VALUE)"
    out = sb.exec("python", "-c", code).stdout.read()
    url = sb.tunnels()[SERVER_PORT].url
    sb.detach()
    return {"id": sb.object_id, "url": url, "out": out, "app_id": sandbox_app.app_id}


@app.function()
def terminate_sandboxes(sandbox_ids: list) -> int:
    for sandbox_id in sandbox_ids:
        sb = modal.Sandbox.from_id(sandbox_id)
        sb.terminate()
        sb.detach()
    return len(sandbox_ids)


@app.local_entrypoint()
def pool(wheels: str = ""):
    refs = list(add_sandbox.map([wheels, wheels]))
    bodies = []
    for ref in refs:
        with urllib.request.urlopen(ref["url"], timeout=30) as response:
            bodies.append(response.status)
    ids = [ref["id"] for ref in refs]
    terminated = terminate_sandboxes.remote(ids)
    codes = []
    for sandbox_id in ids:
        sb = modal.Sandbox.from_id(sandbox_id)
        sb.wait(raise_on_termination=False)
        codes.append(sb.returncode)
    print("RESULT " + json.dumps({"outs": [r["out"] for r in refs], "statuses": bodies, "distinct": len(set(ids)),
                                  "terminated": terminated, "codes": codes, "apps": sorted({r["app_id"] for r in refs}),
                                  "pool_app": app.app_id}), flush=True)


@app.function()
def hostile(state_dir: str) -> dict:
    """Code in a container asks for sandbox images that would make the control plane read its own disk."""
    import os

    from homeport import _protocol as P  # past the SDK: messages as hostile code writes them
    from homeport._bridge import run_sync
    from homeport._client import get_client

    async def request(msg: dict) -> str:
        try:
            await (await get_client()).request(msg, timeout=120)
            return "reached"
        except Exception as exc:
            return type(exc).__name__ + ": " + str(exc)

    def ask(msg: dict) -> str:
        return run_sync(request(msg))

    def raw(steps: list) -> dict:
        return {"t": P.SANDBOX, "op": "create", "argv": [], "timeout": 60, "image": {"steps": steps}}

    base = {"kind": "debian_slim", "python_version": None, "force_build": False}
    out = {}
    for what, image in (("shadow", modal.Image.debian_slim().add_local_file("/etc/shadow", "/s")),
                        ("state_dir", modal.Image.debian_slim().add_local_dir(state_dir, "/state"))):
        try:
            modal.Sandbox.create(image=image)
            out[what] = "reached"
        except modal.exception.Error as exc:
            out[what] = type(exc).__name__ + ": " + str(exc)
    # The same, written by hand past the SDK: the file list the control plane would copy.
    token = f"{state_dir}/token"
    out["raw_files"] = ask(raw([base, {"kind": "add_local_file", "local_path": token, "remote_path": "/t",
                                       "copy": True, "files": [["/t", token]], "dirs": []}]))
    out["smuggled"] = ask(raw([base, {"kind": "pip_install", "packages": ["six"], "files": [["/t", token]],
                                      "_files": [["/t", token]]}]))
    out["requirements"] = ask(raw([base, {"kind": "pip_install_from_requirements", "requirements_txt": token}]))
    out["run_function"] = ask(raw([base, {"kind": "run_function", "function": {
        "module_name": "x", "qualname": "f", "_sys_path": [state_dir], "_cwd": state_dir}, "args": b""}]))
    out["image_id"] = ask({"t": P.SANDBOX, "op": "create", "argv": [], "timeout": 60,
                           "image_id": os.environ["MODAL_IMAGE_ID"]})
    out["image_build"] = ask({"t": P.IMAGE_BUILD, "images": [{"steps": [base]}]})
    return out


@app.local_entrypoint()
def abuse(state_dir: str = ""):
    print("RESULT " + json.dumps(hostile.remote(state_dir)), flush=True)
