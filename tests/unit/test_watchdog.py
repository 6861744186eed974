"""The server's deadlines fire from one thread, in order, and a cancelled one never fires."""

from __future__ import annotations

import threading

from aggregator.watchdog import Watchdog


def _recorder():
    fired: list[str] = []
    done = threading.Event()

    def make(name: str, last: bool = False):
        def callback() -> None:
            fired.append(name)
            if last:
                done.set()

        return callback

    return fired, done, make


def test_deadlines_fire_in_the_order_they_come_due_and_cancelled_ones_never():
    dog = Watchdog()
    fired, done, make = _recorder()
    try:
        dog.after(0.30, make("third", last=True))
        dog.after(0.10, make("first"))
        dog.after(0.20, make("second"))
        dog.after(0.15, make("cancelled")).cancel()
        assert done.wait(10)
        assert fired == ["first", "second", "third"]
        assert dog.pending() == 0
    finally:
        dog.close()


def test_many_deadlines_share_one_thread():
    dog = Watchdog(name="test-watchdog")
    fired, done, make = _recorder()
    try:
        before = {t.ident for t in threading.enumerate()}
        handles = [dog.after(60, make(f"call {i}")) for i in range(200)]
        started = [t for t in threading.enumerate() if t.ident not in before]
        assert [t.name for t in started] == [
            "test-watchdog"
        ]  # a Timer per call would add 200 threads
        assert dog.pending() == 200
        for h in handles:
            h.cancel()
        assert dog.pending() == 0
        dog.after(0.05, make("last", last=True))
        assert done.wait(10) and fired == ["last"]
    finally:
        dog.close()
    assert not started[0].is_alive()


def test_a_failing_callback_does_not_stop_the_others(caplog):
    dog = Watchdog()
    fired, done, make = _recorder()

    def boom() -> None:
        raise RuntimeError("callback bug")

    try:
        dog.after(0.01, boom)
        dog.after(0.05, make("after the failure", last=True))
        assert done.wait(10) and fired == ["after the failure"]
        assert "a deadline callback failed" in caplog.text
    finally:
        dog.close()


def test_cancelled_deadlines_do_not_pile_up():
    dog = Watchdog()
    try:
        for _ in range(
            5000
        ):  # calls far shorter than their bound: each cancels its deadline at once
            dog.after(3600, lambda: None).cancel()
        assert dog.pending() == 0 and len(dog._heap) <= 2 * 1024 + 1
    finally:
        dog.close()


def test_a_closed_watchdog_fires_nothing_and_hands_out_inert_deadlines():
    dog = Watchdog()
    fired, done, make = _recorder()
    dog.after(0.05, make("dropped at close"))
    dog.close()
    late = dog.after(0.0, make("after close"))
    assert late.cancelled and not done.wait(0.3)
    assert fired == [] and dog.pending() == 0
    late.cancel()  # harmless
