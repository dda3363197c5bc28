"""Hostile code in a container asks the control plane for tunnels to sockets that are not its own relay
(the control plane's socket, another path, an abstract name it did not make the Modal way): refused."""

import os

import modal

app = modal.App("compat-tunnel-abuse")


@app.function()
def ask_for_foreign_tunnels() -> list[str]:
    from modal import _protocol as P
    from modal._bridge import run_sync
    from modal._client import get_client

    targets = [
        os.environ.get("HOMEPORT_SERVER_ADDRESS", "/tmp/server.sock"),
        "/var/run/docker.sock",
        "\0homeport-fwd-../../etc",
        "\0some-other-abstract-socket",
        f"{os.environ.get(P.ENV_WEB_SOCKET, '/tmp/x')}-0",
    ]
    answers = []

    async def ask(path):
        client = await get_client()
        try:
            await client.request({"t": P.TUNNEL, "op": "open", "path": path, "port": 1})
            return f"OPENED {path!r}"
        except modal.exception.InvalidError as e:
            return f"refused: {e}"

    for path in targets:
        answers.append(run_sync(ask(path)))
    return answers


@app.local_entrypoint()
def main():
    answers = ask_for_foreign_tunnels.remote()
    assert answers and all(a.startswith("refused: A tunnel relays only") for a in answers), answers
    print("COMPAT OK tunnel_abuse")


if __name__ == "__main__":
    with app.run():
        main()
