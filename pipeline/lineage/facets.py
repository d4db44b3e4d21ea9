"""lakehook's custom OpenLineage facets and the producer URI stamped on every facet.

Custom facets follow the spec's rules for them: the key is prefixed with the producer's name
(``lakehook_…``), each carries ``_producer`` and ``_schemaURL``, and the JSON Schema each
``_schemaURL`` names ships with the package in ``pipeline/lineage/schemas/`` (the URL is an
identifier: lakehook has no public home to host it; the file name is its last path segment).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import attr
from openlineage.client.constants import __version__ as OPENLINEAGE_CLIENT_VERSION  # noqa: N812
from openlineage.client.facet_v2 import data_quality_metrics_dataset
from openlineage.client.generated.base import DatasetFacet, RunFacet

from lakehook import __version__ as LAKEHOOK_VERSION  # noqa: N812

PRODUCER = f"urn:lakehook:producer:{LAKEHOOK_VERSION}"
SCHEMA_BASE = "urn:lakehook:schemas:1-0-0:"
SCHEMA_PACKAGE = "pipeline.lineage"

DRIFT_FACET = "lakehook_drift"
QUALITY_FACET = "lakehook_quality"
RUN_FACET = "lakehook_run"
COMMIT_FACET = "lakehook_commit"

__all__ = [
    "COMMIT_FACET",
    "DRIFT_FACET",
    "LAKEHOOK_VERSION",
    "OPENLINEAGE_CLIENT_VERSION",
    "PRODUCER",
    "QUALITY_FACET",
    "RUN_FACET",
    "ColumnQualityMetrics",
    "LakehookCommitRunFacet",
    "LakehookDriftDatasetFacet",
    "LakehookQualityDatasetFacet",
    "LakehookRunFacet",
    "facet_schema",
]


def _schema_url(name: str) -> str:
    return f"{SCHEMA_BASE}{name}.json#/$defs/{name}"


@attr.define
class LakehookDriftDatasetFacet(DatasetFacet):
    """Drift of a table against its previous processed version on the branch (contract §9).

    Attributes:
        driftClass: the table's class (``NONE`` … ``KEY_AFFECTING``), its most severe change.
        changes: each change as ``{column, change, from, to, class}``.
    """

    driftClass: str  # noqa: N815
    changes: list[dict[str, Any]] = attr.field(factory=list)

    @staticmethod
    def _get_schema() -> str:
        return _schema_url("LakehookDriftDatasetFacet")


@attr.define
class LakehookQualityDatasetFacet(DatasetFacet):
    """What the data-quality metrics facet cannot hold: invalid values and missing keys.

    Attributes:
        rowCount: rows of the table (every CSV row; rows are never dropped).
        invalidValues: per table column, values that did not fit the declared type.
        nullKeys: per surrogate key, rows with a missing natural key part (``<key>_sk`` NULL).
        warnings: the processing warnings of the table.
    """

    rowCount: int  # noqa: N815
    invalidValues: dict[str, int] = attr.field(factory=dict)  # noqa: N815
    nullKeys: dict[str, int] = attr.field(factory=dict)  # noqa: N815
    warnings: list[str] = attr.field(factory=list)

    @staticmethod
    def _get_schema() -> str:
        return _schema_url("LakehookQualityDatasetFacet")


@attr.define
class LakehookRunFacet(RunFacet):
    """Where a run's work came from and went to in lakeFS.

    Attributes:
        repository: the lakeFS repository.
        branch: the branch processed.
        sourceCommit: the user's commit processed.
        outputCommit: lakehook's commit holding the outputs (absent until written).
        reused: the inputs were unchanged, nothing was rewritten.
    """

    repository: str
    branch: str
    sourceCommit: str  # noqa: N815
    outputCommit: str | None = attr.field(default=None)  # noqa: N815
    reused: bool | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return _schema_url("LakehookRunFacet")


@attr.define
class LakehookCommitRunFacet(RunFacet):
    """The lakeFS commit an ingestion run stands for: who committed what, when.

    Attributes:
        commit: the lakeFS commit id.
        committer: the lakeFS user who made it.
        message: its commit message.
        creationDate: when it was made (ISO 8601), when lakeFS says.
    """

    commit: str
    committer: str
    message: str
    creationDate: str | None = attr.field(default=None)  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return _schema_url("LakehookCommitRunFacet")


@attr.define
class ColumnQualityMetrics(data_quality_metrics_dataset.ColumnMetrics):
    """The standard column metrics plus ``invalidCount`` (contract §10 v1.1): values that did
    not fit the declared type (NULL in the table, counted here). The standard facet allows
    additional properties."""

    invalidCount: int | None = attr.field(default=None)  # noqa: N815


def facet_schema(name: str) -> str:
    """The JSON Schema text of the custom facet class ``name`` (shipped with the package).

    Raises:
        FileNotFoundError: there is no such facet schema.
    """
    schema = resources.files(SCHEMA_PACKAGE).joinpath("schemas", f"{name}.json")
    return schema.read_text(encoding="utf-8")
