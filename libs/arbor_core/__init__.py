"""Arbor's shared runtime: configuration, errors, gRPC bootstrap, persistence, artifacts, events."""
