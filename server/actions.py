"""lakeFS action files: render, validate with lakeFS's own rules, install on a branch.

lakeFS validates action files only when an event fires, and one bad file silences every hook
on the ref, so ``validate`` applies the rules of ``pkg/actions/action.go`` before anything is
committed: ``name`` required and matching ``^\\w[\\w\\-. ]+$``, a non-empty ``on`` of known
events (no ``branches`` on tag events), hook ids matching ``^[_a-zA-Z][\\-_a-zA-Z0-9]{1,255}$``
and unique, webhook ``url`` present, one action per file, names unique, a flat folder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lakehook.errors import ConfigError
from pipeline.model import ORIGIN_KEY, ORIGIN_VALUE
from pipeline.ports import LakeFS

ACTIONS_DIR = Path(__file__).resolve().parent.parent / "actions"
TARGET_PREFIX = "_lakefs_actions/"
PLACEHOLDER = "{{LAKEHOOK_URL}}"
LAKEFS_EVENTS = [
    "prepare-commit",
    "pre-commit",
    "post-commit",
    "pre-merge",
    "post-merge",
    "pre-create-branch",
    "post-create-branch",
    "pre-delete-branch",
    "post-delete-branch",
    "pre-create-tag",
    "post-create-tag",
    "pre-delete-tag",
    "post-delete-tag",
    "pre-revert",
    "post-revert",
    "pre-cherry-pick",
    "post-cherry-pick",
]
_NAME = re.compile(r"^\w[\w\-. ]+$")
_HOOK_ID = re.compile(r"^[_a-zA-Z][\-_a-zA-Z0-9]{1,255}$")


@dataclass(frozen=True)
class ActionFile:
    path: str  # in the repository, e.g. _lakefs_actions/lakehook-post-commit.yaml
    text: str

    @property
    def events(self) -> list[str]:
        return list(_on(yaml.safe_load(self.text)) or {})


def templates(directory: Path = ACTIONS_DIR) -> dict[str, str]:
    """File name -> template text of every shipped action file."""
    if not directory.is_dir():
        raise ConfigError(f"action templates not found at {directory}")
    return {p.name: p.read_text("utf-8") for p in sorted(directory.glob("lakehook-*.yaml"))}


def render(url: str, directory: Path = ACTIONS_DIR) -> list[ActionFile]:
    """The action files with the server URL filled in, validated."""
    base = url.rstrip("/")
    if not re.match(r"^https?://[^/\s]+", base):
        raise ConfigError(f"--url {url!r} is not an http(s) URL lakeFS can call")
    files = [
        ActionFile(f"{TARGET_PREFIX}{name}", text.replace(PLACEHOLDER, base))
        for name, text in templates(directory).items()
    ]
    problems = validate(files)
    if problems:
        raise ConfigError("invalid action files: " + "; ".join(problems))
    return files


def _on(data: Any) -> Any:
    """The ``on`` mapping. PyYAML reads the bare key ``on`` as the boolean True (YAML 1.1);
    lakeFS's yaml.v3 reads it as the string "on" (YAML 1.2): accept both spellings."""
    if not isinstance(data, dict):
        return None
    return data["on"] if "on" in data else data.get(True)


def _check_action(path: str, data: Any) -> list[str]:
    if not isinstance(data, dict):
        return [f"{path}: not a YAML mapping"]
    out: list[str] = []
    name = data.get("name")
    if not isinstance(name, str) or not name:
        out.append(f"{path}: 'name' is required")
    elif not _NAME.match(name):
        out.append(f"{path}: name {name!r} does not match {_NAME.pattern}")
    on = _on(data)
    if not isinstance(on, dict) or not on:
        out.append(f"{path}: 'on' must name at least one event")
        on = {}
    for event, spec in on.items():
        if event not in LAKEFS_EVENTS:
            out.append(f"{path}: event {event!r} is not supported by lakeFS")
        if event.endswith("-tag") and isinstance(spec, dict) and spec.get("branches"):
            out.append(f"{path}: 'branches' is not supported in tag event {event}")
    hooks = data.get("hooks")
    if not isinstance(hooks, list) or not hooks:
        out.append(f"{path}: 'hooks' must list at least one hook")
        hooks = []
    seen: set[str] = set()
    for hook in hooks:
        hook_id = hook.get("id") if isinstance(hook, dict) else None
        if not isinstance(hook_id, str) or not _HOOK_ID.match(hook_id):
            out.append(f"{path}: hook id {hook_id!r} does not match {_HOOK_ID.pattern}")
        elif hook_id in seen:
            out.append(f"{path}: hook id {hook_id!r} is used twice")
        else:
            seen.add(hook_id)
        if isinstance(hook, dict):
            if hook.get("type") != "webhook":
                out.append(f"{path}: hook {hook_id}: only webhook hooks are installed")
            props = hook.get("properties") or {}
            if not isinstance(props, dict) or not props.get("url"):
                out.append(f"{path}: hook {hook_id}: webhook 'url' is required")
            elif "timeout" not in props:
                out.append(f"{path}: hook {hook_id}: set an explicit timeout")
    return out


def validate(files: list[ActionFile]) -> list[str]:
    """Every problem lakeFS would find in these files (empty list: all good)."""
    problems: list[str] = []
    names: dict[str, str] = {}
    for f in files:
        rest = f.path[len(TARGET_PREFIX) :] if f.path.startswith(TARGET_PREFIX) else ""
        if not rest or "/" in rest:
            problems.append(f"{f.path}: action files must sit directly in {TARGET_PREFIX}")
        try:
            documents = [d for d in yaml.safe_load_all(f.text) if d is not None]
        except yaml.YAMLError as err:
            problems.append(f"{f.path}: not valid YAML: {err}")
            continue
        if len(documents) != 1:
            problems.append(f"{f.path}: exactly one action per file (lakeFS reads only the first)")
            continue
        problems += _check_action(f.path, documents[0])
        name = documents[0].get("name") if isinstance(documents[0], dict) else None
        if isinstance(name, str):
            if name in names:
                problems.append(f"{f.path}: action name {name!r} also used in {names[name]}")
            names[name] = f.path
    return problems


def install(lakefs: LakeFS, repo: str, branch: str, url: str) -> str | None:
    """Upload and commit the action files; returns the commit id (None: already installed)."""
    files = render(url)
    changed = False
    for f in files:
        current = lakefs.stat_object(repo, branch, f.path)
        data = f.text.encode("utf-8")
        if current is not None and lakefs.read_object(repo, branch, f.path) == data:
            continue
        lakefs.upload_object(repo, branch, f.path, data)
        changed = True
    if not changed:
        return None
    meta: Mapping[str, str] = {ORIGIN_KEY: ORIGIN_VALUE, "lakehook.actions_url": url}
    return lakefs.commit(repo, branch, f"lakehook: install actions calling {url}", meta).id


def has_actions(lakefs: LakeFS, repo: str, ref: str, url: str | None = None) -> bool:
    """lakehook's action files are on ``ref``; with ``url``: and they call that server.

    A server reconciles only the repositories whose actions call it: two lakehook servers on
    one lakeFS (or the test servers of a shared stack) never work on each other's repositories.
    """
    files = lakefs.list_objects(repo, ref, f"{TARGET_PREFIX}lakehook-")
    if not files or url is None:
        return bool(files)
    target = f"{url.rstrip('/')}/webhooks/lakefs".encode()
    return any(target in lakefs.read_object(repo, ref, f.path) for f in files[:1])
