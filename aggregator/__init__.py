"""The aggregator: gRPC service, module store, transparency ledger and operator CLI."""
