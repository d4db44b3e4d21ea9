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
ENGINES = ("pyarrow", "trino", "auto")
MAX_CONFIG_BYTES = 64 << 10  # lakehook.yaml is a few lines; anything larger is refused unread
_KNOWN = {"version", "raw", "contents", "keys", "invalid_values", "gate", "engine"}
_GATE_KNOWN = {"protected", "allow"}


@dataclass(frozen=True)
class StudyConfig:
    raw: str = "raw/"
    contents: str = "raw/contents.csv"
    keys: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_KEYS))
    invalid_values: str = "report"
    gate_protected: tuple[str, ...] = ("main",)
    gate_allow: tuple[str, ...] = ("NONE", "ADDITIVE", "WIDENING", "COSMETIC")
    warnings: tuple[str, ...] = ()
    engine: str = "auto"

    @property
    def keys_fingerprint(self) -> str:
        text = json.dumps({k: list(v) for k, v in self.keys.items()}, sort_keys=False)
        return hashlib.sha256(text.encode()).hexdigest()


def _fail(message: str, hint: str, line: int | None = None, key: str | None = None) -> InputError:
    text = f"key {key}: {message}" if key else message
    return InputError(text, file=CONFIG_PATH, line=line, column=key, hint=hint)


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader refusing anchors and aliases before anything is built from them
    (a few hundred bytes of nested aliases expand to gigabytes: the "billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            mark = event.start_mark
            raise yaml.MarkedYAMLError(
                problem="anchors and aliases (& and *) are not allowed in lakehook.yaml",
                problem_mark=mark,
            )
        return super().compose_node(parent, index)


def _strings(value: Any, key: str, line: int | None, hint: str) -> tuple[str, ...]:
    """A list of non-empty strings, else an error naming ``key``."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _fail(f"must be a list of names, not {_shown(value)}", hint, line, key)
    return tuple(v.strip() for v in value)


def _shown(value: Any) -> str:
    """A short description of a wrong value (its type and a cut repr) for a message."""
    text = repr(value)
    if len(text) > 60:
        text = text[:60] + "..."
    return f"{type(value).__name__} {text}"


def parse_config(data: bytes | None) -> StudyConfig:
    """Validate ``lakehook.yaml``; ``None`` (no file) gives the defaults.

    At most ``MAX_CONFIG_BYTES``; anchors and aliases refused; every key type-checked.

    Raises:
        InputError: the file is too large, not YAML, or a key has a wrong value; the message
            names the file, the key and (where known) the line, and says what to do.
    """
    if data is None:
        return StudyConfig()
    if len(data) > MAX_CONFIG_BYTES:
        raise _fail(
            f"the file has {len(data)} bytes, more than the limit of {MAX_CONFIG_BYTES}",
            "lakehook.yaml holds a few settings (contract §4); remove what is not a setting",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _fail(f"not UTF-8: {err}", "save the file as UTF-8") from None
    loader = _NoAliasLoader(text)
    try:
        node = loader.get_single_node()
        raw: Any = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None) or str(err)
        raise _fail(f"not valid YAML: {problem}", "fix the YAML syntax", line) from None
    except RecursionError:
        raise _fail("nested too deeply", "lakehook.yaml is a flat mapping (contract §4)") from None
    finally:
        loader.dispose()
    if raw is None or node is None:
        return StudyConfig()
    if not isinstance(raw, dict):
        raise _fail("the top level must be a mapping", "see contract §4 for the keys", 1)
    lines = {
        k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)
    }
    warnings = []
    for name in raw:
        if name not in _KNOWN:
            shown = str(name)[:40]
            warnings.append(
                f"{CONFIG_PATH}: unknown key {shown!r} ignored (known: {', '.join(sorted(_KNOWN))})"
            )

    def line_of(key: str) -> int | None:
        return lines.get(key)

    version = raw.get("version", 1)
    if type(version) is not int or version != 1:
        raise _fail(
            f"version {_shown(version)} is not supported",
            "use version: 1",
            line_of("version"),
            "version",
        )
    prefix = raw.get("raw", "raw/")
    if not isinstance(prefix, str) or not prefix.strip() or ".." in prefix.split("/"):
        raise _fail(
            f"must be a folder of the repository, not {_shown(prefix)}",
            "e.g. raw: raw/",
            line_of("raw"),
            "raw",
        )
    prefix = prefix.strip().lstrip("/")
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    contents = raw.get("contents", prefix + "contents.csv")
    if not isinstance(contents, str) or not contents.strip() or ".." in contents.split("/"):
        raise _fail(
            f"must be a path in the repository, not {_shown(contents)}",
            "e.g. contents: raw/contents.csv",
            line_of("contents"),
            "contents",
        )
    keys_raw = raw.get("keys", {k: list(v) for k, v in DEFAULT_KEYS.items()})
    keys_hint = (
        "map each key name to a list of column names, e.g. keys: {patient: [STUDYID, USUBJID]}"
    )
    if not isinstance(keys_raw, dict):
        raise _fail(
            f"must be a mapping, not {_shown(keys_raw)}", keys_hint, line_of("keys"), "keys"
        )
    keys: dict[str, tuple[str, ...]] = {}
    for name, cols in keys_raw.items():
        if not isinstance(name, str) or not name.strip():
            raise _fail(
                f"key name {_shown(name)} is not a name", keys_hint, line_of("keys"), "keys"
            )
        columns = _strings(cols, f"keys.{name}", line_of("keys"), keys_hint)
        if not columns:
            raise _fail("names no columns", keys_hint, line_of("keys"), f"keys.{name}")
        keys[name.strip()] = columns
    invalid = raw.get("invalid_values", "report")
    if invalid not in INVALID_VALUES:
        raise _fail(
            f"must be report or fail, not {_shown(invalid)}",
            "use invalid_values: report (NULL and counted) or fail (the dataset fails)",
            line_of("invalid_values"),
            "invalid_values",
        )
    gate = raw.get("gate", {})
    gate_hint = "e.g. gate: {protected: [main], allow: [NONE, ADDITIVE, WIDENING, COSMETIC]}"
    if gate is None:
        gate = {}
    if not isinstance(gate, dict):
        raise _fail(f"must be a mapping, not {_shown(gate)}", gate_hint, line_of("gate"), "gate")
    for name in gate:
        if name not in _GATE_KNOWN:
            warnings.append(f"{CONFIG_PATH}: unknown key 'gate.{str(name)[:40]}' ignored")
    protected = _strings(
        gate.get("protected", ["main"]), "gate.protected", line_of("gate"), gate_hint
    )
    allow = tuple(
        c.upper()
        for c in _strings(
            gate.get("allow", list(StudyConfig.gate_allow)),
            "gate.allow",
            line_of("gate"),
            gate_hint,
        )
    )
    unknown = [c for c in allow if c not in DRIFT_CLASSES]
    if unknown:
        raise _fail(
            f"names unknown drift classes {unknown}",
            f"use classes from {', '.join(DRIFT_CLASSES)}",
            line_of("gate"),
            "gate.allow",
        )
    engine = raw.get("engine", "auto")
    if engine not in ENGINES:
        raise _fail(
            f"must be pyarrow, trino or auto, not {_shown(engine)}",
            "use engine: auto",
            line_of("engine"),
            "engine",
        )
    return StudyConfig(
        prefix, contents.strip(), keys, invalid, protected, allow, tuple(warnings), engine
    )


def load_config(lakefs: LakeFS, repo: str, ref: str) -> StudyConfig:
    """The config at ``ref`` (defaults when there is no ``lakehook.yaml``).

    A file over ``MAX_CONFIG_BYTES`` is refused from its size, without reading it.
    """
    return parse_config(read_config_bytes(lakefs, repo, ref))


def read_config_bytes(lakefs: LakeFS, repo: str, ref: str) -> bytes | None:
    """The bytes of ``lakehook.yaml`` at ``ref`` (None: no file); too large: InputError."""
    info = lakefs.stat_object(repo, ref, CONFIG_PATH)
    if info is None:
        return None
    if info.size > MAX_CONFIG_BYTES:
        raise _fail(
            f"the file has {info.size} bytes, more than the limit of {MAX_CONFIG_BYTES}",
            "lakehook.yaml holds a few settings (contract §4); remove what is not a setting",
        )
    return lakefs.read_object(repo, ref, CONFIG_PATH)
