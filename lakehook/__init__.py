"""lakehook: keeps typed tables, Hive Metastore schemas and lineage in step with lakeFS branches."""

__version__ = "0.1.0"
