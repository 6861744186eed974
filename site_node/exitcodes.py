"""Exit statuses of the ``site-node`` commands: one home, documented in docs/site-operator.md.

* 0: done, everything verified;
* 1: an error (bad configuration, unreachable aggregator, damaged state, ...);
* 3: ALARM, the aggregator misbehaved: ``E_LOG_FORK``, its log is not an
  extension of what this site stored (``status``, ``run``), or
  ``E_REFUSAL_CONTRADICTED``, it refused a module for a reason the site's own
  check of the package contradicts (``upload``, ``run``; ``status`` while such a
  module stays ``refused``); systemd must not restart into it;
* 4: a module was refused, by this site's own privacy-policy or DP-budget check
  before sealing or by the aggregator (``train``, ``upload``, ``privacy-check``,
  ``run --once``): the command did its work, but a module will never be sent
  or registered; ``site-node status --offline`` shows why;
* 5: ``site-node check`` found at least one FAIL (WARN lines alone exit 0):
  fix what its ``fix:`` lines say before the first ``run``.
"""

from __future__ import annotations

from ffsecure.clitools import EXIT_ERROR
from ffsecure.preflight import EXIT_CHECK_FAILED

EXIT_OK = 0
EXIT_ALARM = 3
EXIT_REFUSED = 4

__all__ = ["EXIT_CHECK_FAILED", "EXIT_ERROR", "EXIT_ALARM", "EXIT_OK", "EXIT_REFUSED"]
