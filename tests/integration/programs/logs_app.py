"""A deployed app whose function prints to stdout and stderr: `homeport app logs` reads them back."""

import sys

import modal

app = modal.App("logs-app")


@app.function()
def speak(word: str) -> str:
    print(f"said {word}")
    print(f"complained {word}", file=sys.stderr)
    return word
