"""One thread that fires the server's per-call deadlines.

Every call the aggregator serves runs under a server-side bound (the request
deadline of unary calls, the upload and download deadlines of streams): when
it passes, a callback logs the refusal and cancels the call. A
``threading.Timer`` per call starts (and ends) one thread per call, so a busy
server ran a second thread beside each of its ``server.max_workers`` workers
and paid a thread start on every call, for a few lines of work that almost
never run. :class:`Watchdog` keeps the deadlines in a heap and fires them from
one thread instead.

Semantics are those of ``threading.Timer``: :meth:`Deadline.cancel` before
the deadline passes means the callback never runs; a callback that has
started is not stopped. Callbacks run on the watchdog's thread one after the
other, so they must be short (log, set a flag, cancel a gRPC call); one that
raises is logged and the others still fire.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# cancelled deadlines stay in the heap until they come due; past this many, and more than
# half the heap, the heap is rebuilt without them (calls far shorter than their bound)
_COMPACT_AFTER = 1024


class Deadline:
    """A scheduled callback; :meth:`cancel` it once the call it guards has ended."""

    __slots__ = ("when", "callback", "cancelled", "_watchdog")

    def __init__(self, when: float, callback: Callable[[], None], watchdog: Watchdog):
        self.when = when
        self.callback = callback
        self.cancelled = False
        self._watchdog = watchdog

    def cancel(self) -> None:
        self._watchdog._cancel(self)


class Watchdog:
    """Deadlines of many calls, fired from one daemon thread (started with the first deadline)."""

    def __init__(self, *, name: str = "watchdog", clock: Callable[[], float] = time.monotonic):
        self._name = name
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._cancelled = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def after(self, delay_s: float, callback: Callable[[], None]) -> Deadline:
        """Run ``callback`` once ``delay_s`` seconds have passed, unless cancelled first.

        Once the watchdog is closed (the server has stopped, and a handler still winding
        down asks for a deadline) the deadline is returned already cancelled: it never fires.
        """
        with self._cond:
            deadline = Deadline(self._clock() + max(0.0, float(delay_s)), callback, self)
            if self._closed:
                deadline.cancelled = True
                return deadline
            heapq.heappush(self._heap, (deadline.when, next(self._seq), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            if self._heap[0][2] is deadline:  # earlier than what the thread waits for
                self._cond.notify()
            return deadline

    def pending(self) -> int:
        """How many deadlines are scheduled and not cancelled."""
        with self._cond:
            return len(self._heap) - self._cancelled

    def close(self, timeout: float = 5.0) -> None:
        """Drop every pending deadline and stop the thread; later deadlines never fire."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cancelled = 0
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _cancel(self, deadline: Deadline) -> None:
        with self._cond:
            if deadline.cancelled:
                return
            deadline.cancelled = True
            if self._closed:  # the heap is already empty
                return
            self._cancelled += 1  # it stays in the heap, counted, until it comes due or a rebuild
            if self._cancelled > _COMPACT_AFTER and self._cancelled * 2 > len(self._heap):
                self._heap = [item for item in self._heap if not item[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _next_due(self) -> Deadline | None:
        """Wait for the earliest live deadline to come due and take it; None once closed."""
        with self._cond:
            while not self._closed:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                    self._cancelled -= 1
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - self._clock()
                if wait <= 0:
                    deadline = heapq.heappop(self._heap)[2]
                    deadline.cancelled = True  # fired: a later cancel() is a no-op
                    return deadline
                self._cond.wait(wait)
            return None

    def _run(self) -> None:
        while (deadline := self._next_due()) is not None:
            try:
                deadline.callback()
            except Exception:  # noqa: BLE001 - one failing callback must not stop the others
                log.exception("a deadline callback failed")
