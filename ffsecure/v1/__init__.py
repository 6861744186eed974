"""Generated gRPC code for the ``ffsecure.v1`` wire contract.

The modules here are generated from ``proto/ffsecure/v1/*.proto`` by
``scripts/gen_proto.sh`` and committed; ``tests/unit/test_proto_drift.py``
fails when they no longer match the ``.proto`` files. Do not edit them by hand.
"""
