"""Privacy evidence for a generator module, measured by the site before upload.

* :mod:`~ffsecure.privacy.memorization`: how close generated samples come to
  the training images, compared with how close unseen real images come
  (nearest-neighbour distances, near-copy fraction, a PNG of the closest pairs);
* :mod:`~ffsecure.privacy.membership`: loss-based membership inference
  against the generator (AUROC, TPR at 1% FPR), optionally calibrated per
  example with a reference model trained on disjoint data;
* :mod:`~ffsecure.privacy.accounting`: the DP epsilon re-computed from the
  recorded training parameters with Opacus' accountant;
* :mod:`~ffsecure.privacy.report`: the numbers-only ``privacy_report`` that
  goes, signed, into the module manifest, and its schema;
* :mod:`~ffsecure.privacy.policy`: the federation's ``privacy_policy`` and
  the pure check the aggregator runs at registration (``E_PRIVACY_POLICY``).

``report`` and ``policy`` import no torch, so the manifest and registration
code can use them cheaply; the measuring modules import torch.
"""
