"""YAML and JSON written by someone else, read without letting the file exhaust the machine.

Every YAML or JSON file a user hands to ganforge (a data YAML, a COCO JSON, a checkpoint's
manifest and meta) goes through :func:`load_yaml` or :func:`load_json`. Each is refused with one
line, before any of the code that reads it walks it, when it:
- is larger than the reader allows (:data:`MAX_YAML_BYTES` for YAML);
- nests deeper than :data:`MAX_DEPTH` (a recursion error otherwise, in PyYAML, in `json` or in
  whatever walks the result);
- expands, with its YAML aliases counted each time they are used, to more than :data:`MAX_NODES`
  values ("billion laughs": 400 bytes of nested aliases that stand for 10^9 strings), or holds an
  alias that refers to itself;
- uses a YAML tag that is not plain data (``!!python/object/apply:os.system``): named as such, not as
  a syntax error;
- holds a number too long to read (Python refuses integers of more than 4,300 digits).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from ganforge.errors import DataError, GanforgeError
from ganforge.io import display_path

MAX_DEPTH = 100  # no real data YAML or COCO JSON nests more than ~6 levels
MAX_NODES = 1_000_000  # values in a YAML once aliases are expanded; a data YAML holds hundreds
MAX_YAML_BYTES = 16 << 20  # a data YAML is a few KB; COCO-sized JSON has no such cap
_STANDARD_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _STANDARD_TAG + "merge"  # `<<: *base`, which the safe loader resolves itself


class _Refused(Exception):
    """Raised inside the YAML walk; turned into the caller's error class with the file's name."""


class _DepthLimitedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than MAX_DEPTH while composing (its composer
    recurses once per level, so a deep file would otherwise end in RecursionError)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Refused(f"nests deeper than {MAX_DEPTH} levels (at line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_STANDARD_TAG):] if tag.startswith(_STANDARD_TAG) else tag


def _check_graph(root: yaml.Node) -> None:
    """Count the values `root` stands for and how deep they nest, aliases expanded, without
    expanding them (each shared node is measured once and its measure reused), and check every tag
    is plain data. Anchors come before their aliases, so the walk meets each shared node first where
    it is written, and recurses no deeper than the composer did."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth)
    open_nodes: set[int] = set()

    def measure(node: yaml.Node) -> tuple[int, int]:
        key = id(node)
        if key in measured:
            return measured[key]
        line = node.start_mark.line + 1
        if key in open_nodes:
            raise _Refused(f"holds an alias that refers to itself (line {line})")
        if node.tag not in _DepthLimitedLoader.yaml_constructors and node.tag != _MERGE_TAG:
            raise _Refused(f"uses the tag {_tag_name(node.tag)} (line {line}), which asks to build a "
                           "program object: ganforge reads only plain data (lists, mappings, strings, "
                           "numbers); remove the tag")
        open_nodes.add(key)
        children = ([] if isinstance(node, yaml.ScalarNode) else node.value
                    if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv])
        parts = [measure(child) for child in children]
        open_nodes.discard(key)
        total, depth = 1 + sum(n for n, _ in parts), 1 + max((d for _, d in parts), default=0)
        if total > MAX_NODES:
            raise _Refused(f"expands to more than {MAX_NODES:,} values once its aliases (*name) are "
                           "followed: write the values out, or use fewer nested aliases")
        if depth > MAX_DEPTH:
            raise _Refused(f"nests deeper than {MAX_DEPTH} levels once its aliases (*name) are followed")
        measured[key] = (total, depth)
        return total, depth

    measure(root)


def loads_yaml(text: str, where: str, error: type[GanforgeError] = DataError) -> Any:
    """One YAML document from `text`, as plain Python data; `where` names it in messages."""
    loader = _DepthLimitedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_graph(root)
        return loader.construct_document(root)
    except _Refused as exc:
        raise error(f"{where} {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise error(f"{where} is not valid YAML{at} ({exc.problem or exc.context}): fix it") from None
    except yaml.YAMLError as exc:
        raise error(f"{where} is not valid YAML ({exc}): fix it") from None
    except ValueError as exc:  # int() of a number longer than Python allows
        raise error(f"{where} holds a value that cannot be read ({_reason(exc)}): fix it") from None
    finally:
        loader.dispose()


def _reason(exc: ValueError) -> str:
    return str(exc).split(";")[0]  # Python's advice after the ';' is about its own settings


def _check_depth(doc: Any, where: str, error: type[GanforgeError], fix: str) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH, without recursion (only containers are visited)."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise error(f"{where} nests deeper than {MAX_DEPTH} levels: {fix}")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, (dict, list)))


def loads_json(data: bytes | str, where: str, error: type[GanforgeError] = DataError,
               fix: str = "fix or re-export it") -> Any:
    """One JSON document from `data`; `where` names it in messages, `fix` says what to do."""
    try:
        doc = json.loads(data)
    except RecursionError:
        raise error(f"{where} nests deeper than {MAX_DEPTH} levels: {fix}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start}): {fix}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{where} is not valid JSON ({exc}): {fix}") from None
    except ValueError as exc:  # int() of a number longer than Python allows
        raise error(f"{where} holds a value that cannot be read ({_reason(exc)}): {fix}") from None
    _check_depth(doc, where, error, fix)
    return doc


def _read(path: Path, limit: int | None, what: str, error: type[GanforgeError]) -> bytes:
    try:
        if limit is not None and os.stat(path).st_size > limit:
            raise error(f"{display_path(path)} is larger than {limit >> 20} MiB: it is not a {what}")
        return path.read_bytes()
    except IsADirectoryError:
        raise error(f"{display_path(path)} is a folder, not a {what}: give the file") from None
    except OSError as exc:
        raise error(f"cannot read {display_path(path)} ({exc.strerror or exc}): check the path") from None


def load_yaml(path: str | os.PathLike, what: str = "YAML file", error: type[GanforgeError] = DataError) -> Any:
    """The YAML file at `path` (a `what`, for messages), read by the rules in the module docstring."""
    path = Path(path)
    data = _read(path, MAX_YAML_BYTES, what, error)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{display_path(path)} is not UTF-8 text ({exc.reason} at byte {exc.start}): "
                    f"save the {what} as UTF-8") from None
    return loads_yaml(text, display_path(path), error)


def load_json(path: str | os.PathLike, what: str = "JSON file", error: type[GanforgeError] = DataError) -> Any:
    """The JSON file at `path` (a `what`, for messages), read by the rules in the module docstring."""
    path = Path(path)
    return loads_json(_read(path, None, what, error), display_path(path), error)
