"""Job-queue style: .spawn, FunctionCall.get / from_id / gather, current_function_call_id."""

import modal

app = modal.App("compat-spawn")


@app.function()
def work(x: int) -> tuple[int, str | None]:
    return x * 10, modal.current_function_call_id()


@app.local_entrypoint()
def main():
    calls = [work.spawn(i) for i in range(3)]
    results = modal.FunctionCall.gather(*calls)
    assert [r[0] for r in results] == [0, 10, 20]
    assert [r[1] for r in results] == [c.object_id for c in calls]
    again = modal.FunctionCall.from_id(calls[1].object_id)
    assert again.get(timeout=60)[0] == 10
    assert modal.current_function_call_id() is None
    print("COMPAT OK spawn_gather")


if __name__ == "__main__":
    with app.run():
        main()
