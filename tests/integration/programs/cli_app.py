import sys

import modal  # resolves to Homeport under `homeport run`

app = modal.App("cli-app")


@app.function()
def shout(word: str, times: int = 1) -> str:
    print(f"out: {word}")
    print(f"err: {word}", file=sys.stderr)
    return (word.upper() + " ") * times


@app.local_entrypoint()
def main(word: str = "hi", times: int = 2, loud: bool = False):
    result = shout.remote(word, times)
    print(f"result={result.strip()} loud={loud} remote_module={modal.__name__}")
