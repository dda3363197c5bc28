"""A spare's rehearsal of a container's import (`runtime._rehearsal`): it must run through (else it
saves nothing, silently), in a container's mode, and leave nothing behind."""

import sys

from homeport import _context
from homeport.runtime import _rehearsal


def test_the_rehearsal_runs_through_and_leaves_nothing(monkeypatch):
    seen = {}
    real_compile = compile

    def spy(source, filename, mode, *a, **kw):  # what the rehearsal's app sees while it runs
        seen["runtime_process"] = _context.runtime_process
        return real_compile(source, filename, mode, *a, **kw)

    monkeypatch.setattr(_rehearsal, "compile", spy, raising=False)
    before = _context.runtime_process
    assert _rehearsal.rehearse() is True
    assert seen == {"runtime_process": True}  # the decorators take a container's path, as the real import will
    assert _context.runtime_process == before
    assert "_homeport_rehearsal" not in sys.modules


def test_a_failing_rehearsal_is_only_time_not_saved(monkeypatch):
    monkeypatch.setattr(_rehearsal, "SOURCE", "raise RuntimeError('broken')")
    before = _context.runtime_process
    assert _rehearsal.rehearse() is False
    assert _context.runtime_process == before
    assert "_homeport_rehearsal" not in sys.modules
