"""Put a privacy report into a module manifest and sign the package again.

The weights, module id and every other manifest field stay as they were; the
manifest gains ``privacy_report`` and a fresh ``created_at`` (the time of the
new signature), and the site signs it with its key. The report becomes part of
what the site's signature covers, so the aggregator and an auditor read the
numbers the site vouched for. Under a DP claim only the data-independent
figures are attached (:func:`ffsecure.privacy.report.releasable`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ffsecure import timefmt
from ffsecure.package import SignedPackage, sign_package
from ffsecure.privacy.report import check_report, releasable


def attach_report(pkg: SignedPackage, report: dict[str, Any], key: Any, cert: Any) -> SignedPackage:
    """A new signed package: ``pkg`` with ``report`` as its manifest's ``privacy_report``."""
    check_report(report)
    manifest = dataclasses.replace(
        pkg.manifest,
        privacy_report=releasable(report, pkg.manifest.dp),
        created_at=timefmt.now_rfc3339(),
    )
    return sign_package(manifest, pkg.weights, key, cert)
