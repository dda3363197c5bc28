"""Image build output on a terminal: the steps, the rest in a file."""

from homeport._build_log import BuildLogSummary, summarise_wanted

LOG = ["=> Step 1/2: debian_slim()", "=> Step 1/2 done in 0.01s", "=> Step 2/2: pip_install('fastapi')",
       *[f"+ package-{i}==1.0" for i in range(60)], "=> Step 2/2 done in 3.20s"]


def test_a_terminal_sees_the_steps_and_where_the_full_log_is(tmp_path):
    s = BuildLogSummary(str(tmp_path))
    shown = [line for line in LOG if s.feed(line)]
    assert shown == [line for line in LOG if line.startswith("=> ")]
    end = s.close(failed=False)
    assert len(end) == 1 and "60 lines not shown" in end[0] and s.path in end[0]
    with open(s.path) as f:
        assert f.read().splitlines() == LOG


def test_a_failed_build_shows_its_last_lines(tmp_path):
    s = BuildLogSummary(str(tmp_path))
    for line in [*LOG[:-1], "ERROR: no matching distribution"]:
        s.feed(line)
    end = s.close(failed=True)
    assert "ERROR: no matching distribution" in end and end[0] == "The build's last lines:"


def test_a_cached_image_leaves_no_file(tmp_path):
    s = BuildLogSummary(str(tmp_path))
    assert s.feed("=> image im-1 cached")
    assert s.close(failed=False) == [] and not list(tmp_path.iterdir())


def test_full_logs_on_request(monkeypatch):
    assert summarise_wanted(interactive=True)
    assert not summarise_wanted(interactive=False)  # pipes and files: every line, as before
    monkeypatch.setenv("HOMEPORT_IMAGE_LOGS", "full")
    assert not summarise_wanted(interactive=True)
