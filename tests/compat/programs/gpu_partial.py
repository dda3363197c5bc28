"""A function asking for a GPU this machine may not have does not stop the rest of the app."""

import modal

app = modal.App("compat-gpu")


@app.function()
def cpu_work(x: int) -> int:
    return x + 1


@app.function(gpu="H100")
def gpu_work() -> str:
    import subprocess

    return subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout


@app.local_entrypoint()
def main():
    assert cpu_work.remote(1) == 2
    try:
        out = gpu_work.remote()
        assert "H100" in out, out
    except modal.exception.Error as e:
        assert "gpu" in str(e).lower(), e  # a clear error, only for the function that needs it
    print("COMPAT OK gpu_partial")


if __name__ == "__main__":
    with app.run():
        main()
