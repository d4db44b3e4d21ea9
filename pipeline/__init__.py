"""Processing: raw CSV + contents -> typed, keyed Parquet, metastore sync, drift, lineage.

Importable and runnable without CherryPy. Ports (Protocols) live in ``pipeline.ports``; real
adapters in ``pipeline.adapters``; pure plans and steps beside them.
"""
