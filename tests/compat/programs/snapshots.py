"""Memory snapshots with `import modal`: the container starts as a copy of the snapshot process (its
snap=True hook ran in another process), not as a slow cold start."""

import os

import modal

app = modal.App("compat-snapshots")


@app.cls(enable_memory_snapshot=True)
class Model:
    @modal.enter(snap=True)
    def load(self):
        self.loaded_in = os.getpid()
        self.weights = list(range(1000))

    @modal.method()
    def info(self) -> tuple[int, int, int, bool]:
        return self.loaded_in, os.getpid(), len(self.weights), modal.is_local()


@app.local_entrypoint()
def main():
    loaded_in, pid, n, local = Model().info.remote()
    assert n == 1000 and local is False
    assert loaded_in != pid, "the container did not start from the memory snapshot"
    print("COMPAT OK snapshots")


if __name__ == "__main__":
    with app.run():
        main()
