"""xgir.progress: plain lines off a terminal (no carriage returns), bars on one."""

import io

import pytest

from xgir import progress as P


class _Tty(io.StringIO):
    def isatty(self):
        return True


def _run(monkeypatch, stream, steps=50, epochs=5, interval="30"):
    """A run on a fake clock that advances 1 s per epoch (steps take no time), so the
    number of lines does not depend on the machine's load."""
    clock = [0.0]
    monkeypatch.setattr(P.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(P.sys, "stderr", stream)
    monkeypatch.setenv("XGIR_PROGRESS_INTERVAL", interval)
    monkeypatch.delenv("XGIR_PROGRESS", raising=False)
    bar = P.Progress(total=steps * epochs, desc="train", epoch_gap=0.0)
    for e in range(epochs):
        for _ in range(steps):
            bar.update(1, epoch=e + 1, loss="0.5")
        clock[0] += 1.0
        bar.epoch_end()
    bar.close()
    return stream.getvalue()


def test_plain_lines_off_a_terminal(monkeypatch):
    text = _run(monkeypatch, io.StringIO())
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text
    # one line per epoch (epoch_gap 0 here; 5 s by default) and a final line with the totals
    assert len(lines) == 6, text
    assert lines[0].startswith("[xgir] train: 50/250 steps (20%)") and "epoch 1, loss 0.5" in lines[0]
    assert lines[-1].startswith("[xgir] train: done, 250 steps in ")


def test_interval_throttles_step_lines(monkeypatch):
    text = _run(monkeypatch, io.StringIO(), steps=1000, epochs=1, interval="3600")
    assert len(text.splitlines()) == 2  # the epoch line and the final line, not 1000 lines


def test_bar_on_a_terminal_and_off(monkeypatch):
    text = _run(monkeypatch, _Tty())
    assert "\r" in text and "[xgir]" not in text  # tqdm's live bar, no plain lines
    monkeypatch.setattr(P.sys, "stderr", io.StringIO())
    for _ in P.iterate(range(10), desc="x", enabled=False):
        pass
    assert P.sys.stderr.getvalue() == ""


@pytest.mark.parametrize("mode", ["plain", "off"])
def test_env_override(monkeypatch, mode):
    monkeypatch.setattr(P.sys, "stderr", _Tty())
    monkeypatch.setenv("XGIR_PROGRESS", mode)
    with P.step("building glyphs"):
        pass
    text = P.sys.stderr.getvalue()
    if mode == "off":
        assert text == ""
    else:
        assert text.splitlines()[0] == "[xgir] building glyphs: started"
        assert text.splitlines()[1].startswith("[xgir] building glyphs: done in ")
