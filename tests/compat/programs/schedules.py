"""A schedule in an ephemeral app started with plain `python`: it fires while `app.run()` lasts; its
runs are seen from here through the Volume client API (listdir, read_file, batch_upload, remove_file)."""

import time

import modal

app = modal.App("compat-schedules")
vol = modal.Volume.from_name("compat-schedules-vol", create_if_missing=True)


@app.function(schedule=modal.Period(seconds=1), volumes={"/data": vol})
def tick():
    with open(f"/data/tick-{time.time_ns()}", "w") as f:
        f.write("tick")
    vol.commit()


def main():
    with vol.batch_upload(force=True) as batch:
        batch.put_file(__file__, "/source.py")
    assert b"".join(vol.read_file("/source.py")).startswith(b'"""A schedule')
    with app.run():
        deadline = time.monotonic() + 30
        ticks = []
        while time.monotonic() < deadline:
            ticks = [e.path for e in vol.listdir("/") if e.path.startswith("tick-")]
            if len(ticks) >= 2:
                break
            time.sleep(0.2)
        assert len(ticks) >= 2, ticks
    vol.copy_files(["/source.py"], "/copy.py")
    assert {e.path for e in vol.listdir("/")} >= {"source.py", "copy.py"}
    for path in [*ticks, "source.py", "copy.py"]:
        vol.remove_file(path)
    print("COMPAT OK schedules")


if __name__ == "__main__":
    main()
