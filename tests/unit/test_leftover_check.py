"""The suite's own check that every test stops what it started (tests/conftest.py): a process or thread
a test leaves running fails that test, named by its command line or thread name; what a test stops, and
what a wider fixture keeps until its own end, does not."""

from pathlib import Path

CONFTEST = Path(__file__).parent.parent / "conftest.py"

TESTS = '''
import subprocess
import sys
import threading
import time

import pytest


def test_leaves_a_process():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # left-process"])


def test_leaves_a_thread():
    threading.Thread(target=time.sleep, args=(60,), name="left-thread", daemon=True).start()


def test_stops_what_it_started():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc.terminate()
    threading.Thread(target=time.sleep, args=(0.2,)).start()  # ends within the grace period
    proc.wait()


@pytest.fixture(scope="module")
def server():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.terminate()
    proc.wait()


def test_uses_a_module_fixtures_process(server):
    assert server.poll() is None


def test_uses_it_again(server):
    assert server.poll() is None
'''


def test_a_test_that_leaves_a_process_or_a_thread_running_fails_naming_it(pytester):
    # The same check, with a short grace period (what is left over is waited for that long).
    pytester.makeconftest(CONFTEST.read_text().replace("LEFTOVER_GRACE_S = 15.0", "LEFTOVER_GRACE_S = 1.0"))
    pytester.makepyfile(test_leftovers=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=5, errors=2)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaves_a_process*",
                                 "*test_leaves_a_process left these running:",
                                 "*process *import time; time.sleep(60)  # left-process"])
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaves_a_thread*",
                                 "*test_leaves_a_thread left these running:",
                                 "*thread 'left-thread' (daemon)"])
