"""Which interpreter an image's python_version resolves to, and what the error lists when none fits."""

import pytest

from homeport.image_builder.interpreters import Interpreter, Interpreters, NoInterpreter
from homeport.image_builder.rootfs import ROOTFS_INTERPRETERS

# Versions no real machine has, so that the interpreter running the tests never matches.
SYSTEM = Interpreter("/usr/bin/python3.77", (3, 77, 2))  # the distribution's: under /usr
OWN_DIR = Interpreter("/opt/hp-fake/py3.77.9/bin/python3.77", (3, 77, 9))  # pyenv-style, its own directory
OTHER = Interpreter("/opt/hp-fake/py3.78/bin/python3.78", (3, 78, 1))


@pytest.fixture
def found():
    interpreters = Interpreters()
    interpreters._found = [SYSTEM, OWN_DIR, OTHER]  # as if probed
    return interpreters


def test_any_matching_interpreter_serves_a_plain_image(found):
    assert found.find("3.77") == OWN_DIR  # the newest match
    assert found.find("3.77.2") == SYSTEM


def test_a_root_file_system_image_never_gets_the_system_python(found):
    assert found.find("3.77", ROOTFS_INTERPRETERS) == OWN_DIR
    with pytest.raises(NoInterpreter) as info:
        found.find("3.77.2", ROOTFS_INTERPRETERS)
    message = str(info.value)
    assert "that images with apt_install or run_commands can use" in message
    assert "Python 3.77.2 at /usr/bin/python3.77 is the machine's system Python" in message  # why not that one
    # Only what such an image can use is offered, and no install that would land in the system's prefix.
    assert "Available here for images with apt_install or run_commands: 3.77.9, 3.78.1." in message
    assert "distribution" not in message and "`uv python install 3.77.2`" in message


def test_the_available_list_of_a_plain_image_has_every_usable_version(found):
    with pytest.raises(NoInterpreter, match=r"No Python 3\.99 interpreter on this machine \(.*Available here: "
                                            r"3\.77\.2, 3\.77\.9, 3\.78\.1\."):
        found.find("3.99")


def test_too_old_lists_what_the_image_kind_can_use(found):
    with pytest.raises(NoInterpreter, match=r"older than Homeport's runtime supports .* Available here for images "
                                            r"with apt_install or run_commands: 3\.77\.9, 3\.78\.1\.$"):
        found.find("3.9", ROOTFS_INTERPRETERS)


def test_planning_stays_on_the_event_loop_only_when_it_reads_no_file_and_probes_nothing(found, monkeypatch):
    import sys

    from homeport.image_builder import plan

    own = f"{sys.version_info.major}.{sys.version_info.minor}"
    fresh = Interpreters()
    monkeypatch.setattr(fresh, "_probe", lambda: pytest.fail("probed"))
    assert plan.enrich_is_quick([{"kind": "debian_slim", "python_version": own}, {"kind": "pip_install"}], fresh)
    assert not plan.enrich_is_quick([{"kind": "debian_slim", "python_version": "3.77"}], fresh)  # would probe
    assert plan.enrich_is_quick([{"kind": "debian_slim", "python_version": "3.77"}], found)  # probed already
    for step in ({"kind": "pip_install_from_requirements", "requirements_txt": "r.txt"},
                 {"kind": "uv_pip_install", "requirements": ["r.txt"]},
                 {"kind": "add_local_file", "files": []}, {"kind": "run_commands"}):
        assert not plan.enrich_is_quick([{"kind": "debian_slim", "python_version": own}, step], found)
