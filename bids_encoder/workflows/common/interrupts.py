"""Stopping on SIGINT (Ctrl-C) and SIGTERM (a scheduler's time limit, ``docker stop``, ``kill``).

The handlers raise in the main thread, as Python's own Ctrl-C handler does, so that the pipeline unwinds and removes
what an unfinished fit wrote. Python runs signal handlers between bytecodes, and when that happens inside a
finaliser (a ``__del__`` or weakref callback run by the garbage collector, e.g. of a TensorFlow or nibabel object)
the exception is only printed as "Exception ignored in …" and the run would go on as if nothing happened. So the
handlers also record the signal, and the pipelines call :func:`raise_if_interrupted` at every point where a lost
signal must stop them: before a fit, before it writes, before its marker, before a report.
"""

import contextlib
import signal

__all__ = ["Terminated", "handling_signals", "raise_if_interrupted", "received"]

_received = []


class Terminated(KeyboardInterrupt):
    """SIGTERM: stop like Ctrl-C does (exit code 143 rather than 130)."""


def _exception(name):
    return Terminated(name) if name == "SIGTERM" else KeyboardInterrupt(name)


def _handle(signum, _frame):
    name = signal.Signals(signum).name
    _received.append(name)
    raise _exception(name)


@contextlib.contextmanager
def handling_signals():
    """Within the block, SIGINT and SIGTERM raise and are recorded; after it, the previous handlers are back and
    the record is cleared.

    Must be entered from the main thread.
    """
    _received.clear()
    previous = {sent: signal.signal(sent, _handle) for sent in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sent, handler in previous.items():
            signal.signal(sent, handler)
        _received.clear()


def received():
    """The name of the first signal received since :func:`handling_signals` was entered (``None`` if none)."""
    return _received[0] if _received else None


def raise_if_interrupted():
    """Raise the exception of a received signal again: its first one may have been swallowed by a finaliser."""
    if _received:
        raise _exception(_received[0])
