"""Stores: the `Store` protocol and its implementations, one module per backend."""
