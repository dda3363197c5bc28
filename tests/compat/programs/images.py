"""Images: pip_install on debian_slim, env, App.image as the default, an import inside the function."""

import modal

image = modal.Image.debian_slim(python_version="3.12").pip_install("six==1.17.0").env({"STAGE": "compat"})
app = modal.App("compat-images", image=image)


@app.function()
def versions() -> tuple[str, str]:
    import os

    import six

    return six.__version__, os.environ["STAGE"]


@app.local_entrypoint()
def main():
    assert app.image is image
    assert versions.remote() == ("1.17.0", "compat")
    print("COMPAT OK images")


if __name__ == "__main__":
    with app.run():
        main()
