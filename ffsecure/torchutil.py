"""Process-wide torch settings, changed for one block and always put back.

torch's thread count is global to the process. The classifier's count is part
of the determinism contract (recorded in ``classifier.trained``), a site trains
and evaluates on the threads its ``site.toml`` names, and a library call must
not leave a caller's process with another count than it found. So every block
that needs a count runs inside :func:`torch_threads`, which restores the
previous count on the way out, exceptions included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch threads (``None``: keep the current count)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
