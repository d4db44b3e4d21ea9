"""The study config, ``lakehook.yaml`` (contract §4), read from the commit being processed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from lakehook.errors import InputError
from pipeline.model import DRIFT_CLASSES
from pipeline.ports import LakeFS

CONFIG_PATH = "lakehook.yaml"
DEFAULT_KEYS: dict[str, tuple[str, ...]] = {
    "patient": ("STUDYID", "USUBJID"),
    "visit": ("STUDYID", "USUBJID", "VISITNUM"),
    "site": ("STUDYID", "SITEID"),
}
INVALID_VALUES = ("report", "fail")
_KNOWN = {"version", "raw", "contents", "keys", "invalid_values", "gate"}


@dataclass(frozen=True)
class StudyConfig:
    raw: str = "raw/"
    contents: str = "raw/contents.csv"
    keys: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_KEYS))
    invalid_values: str = "report"
    gate_protected: tuple[str, ...] = ("main",)
    gate_allow: tuple[str, ...] = ("NONE", "ADDITIVE", "WIDENING", "COSMETIC")
    warnings: tuple[str, ...] = ()

    @property
    def keys_fingerprint(self) -> str:
        text = json.dumps({k: list(v) for k, v in self.keys.items()}, sort_keys=False)
        return hashlib.sha256(text.encode()).hexdigest()


def _fail(message: str, hint: str, line: int | None = None) -> InputError:
    return InputError(message, file=CONFIG_PATH, line=line, hint=hint)


def parse_config(data: bytes | None) -> StudyConfig:
    """Validate ``lakehook.yaml``; ``None`` (no file) gives the defaults.

    Raises:
        InputError: the file is not YAML or a key has a wrong value; names file and line.
    """
    if data is None:
        return StudyConfig()
    try:
        raw: Any = yaml.safe_load(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise _fail(f"not UTF-8: {err}", "save the file as UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise _fail(f"not valid YAML: {err}", "fix the YAML syntax", line) from None
    if raw is None:
        return StudyConfig()
    if not isinstance(raw, dict):
        raise _fail("the top level must be a mapping", "see contract §4 for the keys")
    warnings = [f"{CONFIG_PATH}: unknown key {k!r} ignored" for k in raw if k not in _KNOWN]
    if raw.get("version", 1) != 1:
        raise _fail(f"version {raw.get('version')!r} is not supported", "use version: 1")
    prefix = str(raw.get("raw", "raw/"))
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    contents = str(raw.get("contents", prefix + "contents.csv"))
    keys_raw = raw.get("keys", {k: list(v) for k, v in DEFAULT_KEYS.items()})
    if not isinstance(keys_raw, dict) or not all(
        isinstance(cols, list) and cols and all(isinstance(c, str) and c for c in cols)
        for cols in keys_raw.values()
    ):
        raise _fail(
            "keys must map each key name to a non-empty list of column names",
            "e.g. keys: {patient: [STUDYID, USUBJID]}",
        )
    keys = {str(name): tuple(cols) for name, cols in keys_raw.items()}
    invalid = str(raw.get("invalid_values", "report"))
    if invalid not in INVALID_VALUES:
        raise _fail(f"invalid_values must be report or fail, not {invalid!r}", "use report")
    gate = raw.get("gate", {}) or {}
    if not isinstance(gate, dict):
        raise _fail("gate must be a mapping", "gate: {protected: [main], allow: [...]}")
    protected = tuple(str(b) for b in gate.get("protected", ["main"]) or [])
    allow = tuple(str(c).upper() for c in gate.get("allow", StudyConfig.gate_allow) or [])
    unknown = [c for c in allow if c not in DRIFT_CLASSES]
    if unknown:
        raise _fail(
            f"gate.allow names unknown drift classes {unknown}",
            f"use classes from {', '.join(DRIFT_CLASSES)}",
        )
    return StudyConfig(prefix, contents, keys, invalid, protected, allow, tuple(warnings))


def load_config(lakefs: LakeFS, repo: str, ref: str) -> StudyConfig:
    """The config at ``ref`` (defaults when there is no ``lakehook.yaml``)."""
    if lakefs.stat_object(repo, ref, CONFIG_PATH) is None:
        return StudyConfig()
    return parse_config(lakefs.read_object(repo, ref, CONFIG_PATH))
