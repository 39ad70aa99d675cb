"""Progress reports: rate and ETA values, live line on a terminal, plain lines in a log."""

import io

from webfg.progress import Progress, format_seconds, progress


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_format_seconds():
    assert format_seconds(0) == "0:00"
    assert format_seconds(75) == "1:15"
    assert format_seconds(3725) == "1:02:05"


def test_rate_and_eta_follow_the_clock():
    clock, out = FakeClock(), io.StringIO()
    bar = Progress(total=100, desc="infer", unit="img", stream=out, tty=False, interval=10, clock=clock)
    clock.now += 5
    bar.update(25)  # 5 s < interval: no report yet
    assert out.getvalue() == ""
    assert bar.rate() == 5.0
    clock.now += 5
    bar.update(25)  # 50 items in 10 s: 5 img/s, 50 left -> ETA 10 s
    assert out.getvalue() == "infer: 50/100 50% 5 img/s elapsed 0:10 ETA 0:10\n"
    clock.now += 10
    bar.update(50)
    bar.close()
    bar.close()  # the final line is written once
    lines = out.getvalue().splitlines()
    assert lines[1:] == ["infer: 100/100 100% 5 img/s elapsed 0:20"] * 2  # interval reached, then close
    assert "\r" not in out.getvalue()


def test_log_file_gets_one_line_per_interval():
    clock, out = FakeClock(), io.StringIO()
    bar = Progress(total=1000, stream=out, tty=False, interval=30, clock=clock)
    for _ in range(1000):
        clock.now += 0.5  # 500 s in all
        bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 500 // 30 + 1  # one per 30 s, plus the final line
    assert lines[-1] == "1000/1000 100% 2 it/s elapsed 8:20"


def test_terminal_line_is_redrawn_in_place():
    clock, out = FakeClock(), io.StringIO()
    bar = Progress(total=4, desc="epoch 1/2", unit="batch", stream=out, tty=True, clock=clock)
    for _ in range(4):
        clock.now += 1
        bar.update()
    bar.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    frames = [f for f in text.rstrip("\n").split("\r\x1b[K") if f]
    assert frames[0] == "epoch 1/2: 1/4 25% 1 batch/s elapsed 0:01 ETA 0:03"
    assert frames[-1] == "epoch 1/2: 4/4 100% 1 batch/s elapsed 0:04"


def test_tty_is_asked_from_the_stream():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert Progress(stream=Terminal()).tty and Progress(stream=Terminal()).interval == 0.2
    assert not Progress(stream=io.StringIO()).tty and Progress(stream=io.StringIO()).interval == 30


def test_wrapper_yields_every_item_and_reports_without_total():
    out = io.StringIO()
    assert list(progress(range(7), stream=out, tty=False, interval=0)) == list(range(7))
    assert out.getvalue().splitlines()[-1].startswith("7/7 100%")
    out = io.StringIO()
    assert list(progress((i for i in range(3)), stream=out, tty=False)) == [0, 1, 2]
    assert out.getvalue().startswith("3 ") and "ETA" not in out.getvalue()
