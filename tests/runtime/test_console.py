"""Terminal helpers: the "did you mean" hint and the bar that shows only on a terminal."""

import io

from barlowtwins.runtime.console import did_you_mean, on_terminal, terminal_bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_did_you_mean():
    assert did_you_mean("resnet05", ["resnet50", "resnet18", "vit_b_16"]) == " (did you mean resnet50?)"
    assert did_you_mean("resnet05", ["resnet50", "resnet18", "vit_b_16"], n=2) == \
        " (did you mean resnet50, resnet18?)"
    assert did_you_mean("--lr-weight", ["--lr-weights", "--lr-biases"]) == " (did you mean --lr-weights?)"
    assert did_you_mean("epoch", {"epochs": 1}, prefix="--") == " (did you mean --epochs?)"
    assert did_you_mean("zzz", ["resnet50"]) == ""


def test_the_bar_draws_only_on_a_terminal():
    log, tty = io.StringIO(), _Tty()
    assert not on_terminal(log) and on_terminal(tty)
    assert list(terminal_bar(range(3), stream=log, desc="features")) == [0, 1, 2]
    assert log.getvalue() == ""  # a log file gets no carriage-return lines
    assert list(terminal_bar(range(3), stream=tty, desc="features")) == [0, 1, 2]
    assert "features" in tty.getvalue() and "\r" in tty.getvalue()
    forced = io.StringIO()
    bar = terminal_bar(total=2, stream=forced, enabled=True, desc="pretrain")
    bar.update(2)
    bar.close()
    assert "pretrain" in forced.getvalue()
