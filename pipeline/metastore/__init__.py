"""The Hive schemas of branches and tags: what they should hold, making them so, checking them.

* ``sync``: table definitions from manifests, the pure sync plan, its executor, schema copy.
* ``verify``: metastore vs manifests vs Parquet footers vs a probe query, as a problem list.
* ``repair``: sync, verify, re-sync once when the metastore drifted, verify again.

Table names, schema names and locations come from ``pipeline.naming``.
"""
