"""A plain `python script_app.py` program: `with app.run():` and `import modal`."""

import modal

app = modal.App("script-app")


@app.function()
def cube(x):
    return x**3


if __name__ == "__main__":
    with app.run(show_logs=False):
        print("cubes", list(cube.map(range(4))))
