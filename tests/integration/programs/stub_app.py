import modal

stub = modal.Stub("legacy")


@stub.function()
def hello(name: str = "world") -> str:
    return f"hello {name}"
