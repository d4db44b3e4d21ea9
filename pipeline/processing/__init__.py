"""Processing: raw CSV + contents -> typed, keyed Parquet, committed back to the branch.

Pure parts (``config``, ``contents``, ``types``, ``keys``, ``plan``) do no I/O; ``convert``
works on local files; ``executor`` and ``writeback`` talk to lakeFS through the ``LakeFS`` port.
"""
