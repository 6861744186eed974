"""Exit statuses of the ``aggregator`` commands: one home, documented in docs/operator-guide.md.

* 0: done;
* 1: an error (a typed refusal ``error[E_CODE]``: bad configuration, a damaged
  store, a key that does not match, ...);
* 2: a usage error (a missing or unknown option);
* 5: ``aggregator check`` found at least one FAIL (WARN lines alone exit 0):
  fix what its ``fix:`` lines say before ``serve``. The same number as
  ``site-node check`` (:data:`ffsecure.preflight.EXIT_CHECK_FAILED`).
"""

from __future__ import annotations

from ffsecure.clitools import EXIT_ERROR, EXIT_USAGE
from ffsecure.preflight import EXIT_CHECK_FAILED

EXIT_OK = 0

__all__ = ["EXIT_CHECK_FAILED", "EXIT_ERROR", "EXIT_OK", "EXIT_USAGE"]
