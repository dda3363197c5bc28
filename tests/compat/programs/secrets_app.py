"""Secrets: from_dict, from_name (created with `modal secret create`), on the app and per function."""

import os

import modal

app = modal.App("compat-secrets", secrets=[modal.Secret.from_dict({"APP_LEVEL": "a"})])


@app.function(secrets=[modal.Secret.from_name("compat-secret", required_keys=["API_KEY"])])
def read_env() -> tuple[str, str]:
    return os.environ["API_KEY"], os.environ["APP_LEVEL"]


@app.local_entrypoint()
def main():
    assert read_env.remote() == ("s3cr3t", "a")
    assert "API_KEY" not in os.environ
    print("COMPAT OK secrets")


if __name__ == "__main__":
    with app.run():
        main()
