"""A deployed function with a warm container that holds some memory, for the containers page."""

import modal

app = modal.App("dash-warm")
ballast = None


@app.function(min_containers=1)
def hold() -> int:
    return 1


@app.cls(min_containers=1)
class Holder:
    @modal.enter()
    def fill(self):
        global ballast
        ballast = bytearray(48 * 1024 * 1024)  # touched: it counts in the container's memory
        for i in range(0, len(ballast), 4096):
            ballast[i] = 1

    @modal.method()
    def size(self) -> int:
        return len(ballast)
