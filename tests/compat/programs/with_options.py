"""Cls.with_options / with_concurrency and class parameters."""

import os

import modal

app = modal.App("compat-with-options")


@app.cls(cpu=0.5)
class Greeter:
    greeting: str = modal.parameter(default="hello")

    @modal.enter()
    def setup(self):
        self.pid = os.getpid()

    @modal.method()
    def greet(self, name: str) -> str:
        return f"{self.greeting} {name} {os.environ.get('COLOR', '-')}"


@app.local_entrypoint()
def main():
    assert Greeter().greet.remote("a") == "hello a -"
    assert Greeter(greeting="hi").greet.remote("b") == "hi b -"
    Colored = Greeter.with_options(secrets=[modal.Secret.from_dict({"COLOR": "blue"})], timeout=60)
    assert Colored().greet.remote("c") == "hello c blue"
    Many = Greeter.with_concurrency(max_inputs=4)
    assert sorted(Many().greet.map(["x", "y"])) == ["hello x -", "hello y -"]
    print("COMPAT OK with_options")


if __name__ == "__main__":
    with app.run():
        main()
