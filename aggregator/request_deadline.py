"""A server-side bound on the wait for a call's single request message.

For a method whose request is unary (every ``ffsecure.v1.Aggregator`` method
but ``UploadModule``, and the health service's ``Check`` and ``Watch``),
grpc-python reads the request message in a worker thread before the handler
runs, and that read has no server-side bound: a client that opens such a call
as a stream and never sends its message (nor closes the stream) holds one of
the ``server.max_workers`` threads until its own deadline, or for ever.

:class:`RequestDeadlineInterceptor` serves every such method as a
request-streaming one instead (on the wire a unary request is a stream of one
message, so clients see no difference): ``unary_unary`` becomes
``stream_unary`` and ``unary_stream`` becomes ``stream_stream``, with the same
deserializer and serializer. The wrapper reads the one message itself under a
deadline of ``server.request_deadline_s`` (kept by the server's
:class:`~aggregator.watchdog.Watchdog`); when it passes first it logs the
refusal (``E_DEADLINE`` with the peer identity) and cancels the call, which
frees the worker (the client sees ``CANCELLED``). Zero messages, or more than
one, are refused with ``E_REQUEST_FORMAT`` (INVALID_ARGUMENT). Then the
original behaviour runs with ``(request, context)``, unchanged: the same
servicer context, so authentication (``service._rpc``) reads the peer as
before. Methods that already stream their requests, and unknown methods (no
handler: UNIMPLEMENTED), are passed through as they are.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

from aggregator.grpc_errors import RequestError, abort_with, log_refusal
from aggregator.watchdog import Watchdog

AGGREGATOR_PREFIX = "ffsecure.v1.Aggregator/"

PeerName = Callable[[grpc.ServicerContext], "str | None"]

_NOTHING = object()


def _method_name(full: str) -> str:
    """``GetCheckpoint`` for the aggregator's own methods (as ``service._rpc`` logs them).

    Any other method keeps its full path.
    """
    name = full.lstrip("/")
    return name[len(AGGREGATOR_PREFIX) :] if name.startswith(AGGREGATOR_PREFIX) else name


class RequestDeadlineInterceptor(grpc.ServerInterceptor):
    """Read a unary call's request under a server-side deadline (see the module docstring)."""

    def __init__(self, limit_s: float, peer_name: PeerName, watchdog: Watchdog):
        if not limit_s > 0:
            raise ValueError("the request deadline must be positive")
        self.limit_s = float(limit_s)
        self.peer_name = peer_name
        self.watchdog = watchdog  # the server's, shared with the stream deadlines

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        method = _method_name(handler_call_details.method)
        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_unary_rpc_method_handler(
            self._wrap(handler.unary_unary, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _peer(self, context: grpc.ServicerContext) -> str | None:
        try:
            return self.peer_name(context)
        except Exception:  # noqa: BLE001 - naming the peer must never fail a refusal
            return None

    def _wrap(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        def handler(request_iterator, context: grpc.ServicerContext, *args):
            request = self.read_one(request_iterator, context, method)
            # args: the send_response_callback of an experimental_non_blocking
            # behaviour (health Watch).
            return behavior(request, context, *args)

        # gRPC looks these up on the behaviour (health's Watch is non-blocking); keep them.
        for attr in ("experimental_non_blocking", "experimental_thread_pool"):
            if hasattr(behavior, attr):
                setattr(handler, attr, getattr(behavior, attr))
        handler.__name__ = getattr(behavior, "__name__", method)
        handler.__qualname__ = f"request_deadline({handler.__name__})"
        return handler

    def read_one(self, request_iterator, context: grpc.ServicerContext, method: str) -> Any:
        """The call's only request message, read within ``limit_s``; else the call ends here."""
        lock = threading.Lock()
        state = {"done": False, "expired": False}
        limit = self.limit_s

        def expire() -> None:
            with lock:
                if state["done"]:
                    return
                state["expired"] = True
            log_refusal(
                context,
                RequestError(
                    f"the request message of {method} did not arrive within {limit:g} s",
                    code="E_DEADLINE",
                    hint="send the request as soon as the call is open",
                ),
                method=method,
                peer=self._peer(context),
            )
            context.cancel()  # wakes the blocked read below and frees this worker

        timer = self.watchdog.after(limit, expire)
        try:
            first = next(
                request_iterator, _NOTHING
            )  # RpcError when cancelled (by the timer or the client)
            second = _NOTHING if first is _NOTHING else next(request_iterator, _NOTHING)
        finally:
            with lock:
                state["done"] = True
            timer.cancel()
        if state[
            "expired"
        ]:  # the message came just as the timer fired: the call is already cancelled
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"[E_DEADLINE] {method}: request deadline exceeded",
            )
        if first is _NOTHING or second is not _NOTHING:
            if (
                not context.is_active()
            ):  # gRPC already ended the call (e.g. a request that does not parse)
                context.abort(grpc.StatusCode.CANCELLED, "the call already ended")
            abort_with(
                context,
                RequestError(
                    f"{method} takes exactly one request message; "
                    f"{'none arrived' if first is _NOTHING else 'more than one arrived'}",
                    code="E_REQUEST_FORMAT",
                    hint="send one request message per call (use the generated stub)",
                ),
                method=method,
                peer=self._peer(context),
            )
        return first
