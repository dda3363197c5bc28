"""Memory snapshots with `import modal`: the container starts as a copy of the snapshot process (its
snap=True hook ran in another process), not as a slow cold start."""

import modal


def process_started() -> str:
    """This process's start time (clock ticks since boot): a copy of the snapshot process is a new
    process, started later, even where each container is process 1 of its own PID namespace."""
    with open("/proc/self/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


app = modal.App("compat-snapshots")


@app.cls(enable_memory_snapshot=True)
class Model:
    @modal.enter(snap=True)
    def load(self):
        self.loaded_in = process_started()
        self.weights = list(range(1000))

    @modal.method()
    def info(self) -> tuple[str, str, int, bool]:
        return self.loaded_in, process_started(), len(self.weights), modal.is_local()


@app.local_entrypoint()
def main():
    loaded_in, started, n, local = Model().info.remote()
    assert n == 1000 and local is False
    assert loaded_in != started, "the container did not start from the memory snapshot"
    print("COMPAT OK snapshots")


if __name__ == "__main__":
    with app.run():
        main()
