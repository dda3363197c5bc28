"""A job queue as Modal's guide writes one: a producer on the client, consumers in containers, results in a Dict."""

import queue

import modal

app = modal.App("dq-job-queue")
results = modal.Dict.from_name("dq-job-results", create_if_missing=True)
STOP = "stop"


@app.function()
def consumer(jobs: modal.Queue, worker: int) -> int:
    done = 0
    while True:
        job = jobs.get(timeout=60)
        if job == STOP:
            return done
        results[job] = {"square": job * job, "worker": worker}
        done += 1


@app.function()
def get_with_timeout(q: modal.Queue) -> str:
    try:
        q.get(timeout=0.3)
    except queue.Empty:
        return "empty"
    return "got something"


@app.function()
def lookup_in_container(name: str) -> object:
    # Named objects are workspace-global: a container finds them by name, as in Modal.
    return modal.Dict.from_name(name).get("from-client")


@app.function()
def ephemeral_in_container() -> list:
    with modal.Queue.ephemeral() as q:
        q.put_many([1, 2, 3], partition="p")
        return q.get_many(10, partition="p")


@app.local_entrypoint()
def main(n: int = 30, workers: int = 3):
    results.clear()
    with modal.Queue.ephemeral() as jobs:
        calls = [consumer.spawn(jobs, w) for w in range(workers)]
        jobs.put_many(list(range(n)))
        jobs.put_many([STOP] * workers)
        done = [c.get() for c in calls]
        assert sum(done) == n, done
        assert get_with_timeout.remote(jobs) == "empty"
    got = dict(results.items())
    assert sorted(got) == list(range(n)), sorted(got)
    assert all(v["square"] == k * k for k, v in got.items())
    results["from-client"] = "hello"
    assert lookup_in_container.remote("dq-job-results") == "hello"
    assert ephemeral_in_container.remote() == [1, 2, 3]
    print("JOB QUEUE OK", n, "jobs by", len({v["worker"] for v in got.values()}), "workers")
