"""Rewrite one container's ``resources`` in a manifest, touching nothing else.

Reviewers read the diff of a daytwo PR; every line that changes outside the container's
``resources`` block is noise at best and a silent change at worst. A ruamel.yaml
round-trip *dump* re-emits the whole document (indentation, spacing before comments,
line wrapping, sequence style), so instead this module uses ruamel.yaml to *compose*
the document (nodes with exact source positions) and edits the text surgically:
existing quantity scalars are replaced in place (keeping their quoting), missing keys
are inserted as new lines indented like their siblings (or as flow entries inside a
flow mapping). Other documents of the file and their ``---`` separators are never
parsed for writing, so they stay byte for byte.

Every result is parsed back and compared with the expected data (the original document
with only those quantities changed); a mismatch raises :class:`SinkError` and nothing is
written. Python-specific tags, excessive aliases and anchors shared with the edited
nodes are refused, because editing them would either be unsafe or change other places.

``recommended`` values that are ``None`` mean "leave as is": the sink never removes a
request or limit, it only sets the ones the recommendation carries.

:func:`patch_workload` is the entry point for a whole workload: it locates each
container's source of truth (:func:`pipeline.prsink.locate.locate_source`: a manifest, a
Kustomize overlay patch, a new overlay patch file listed in its kustomization, or a Helm
values path), writes the quantities there and the JVM options into the variable the
container already uses, and returns the changed files, all without touching the disk.
"""

from __future__ import annotations

import copy
import json
import math
import posixpath
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.core.quantity import format_cpu, format_memory, parse_cpu, parse_memory
from pipeline.errors import DaytwoError, SinkError
from pipeline.prsink.locate import (
    POD_TEMPLATE_PATHS,
    DocumentChunk,
    KeyPath,
    Location,
    NewPatchFile,
    SourceOfTruth,
    ValuesRef,
    WorkloadId,
    format_key_path,
    guard_document,
    load_document,
    locate_source,
    split_documents,
)

_NULL_TAG = "tag:yaml.org,2002:null"
_DEFAULT_INDENT_STEP = 2

# (section of `resources`, key in it, field of the recommendation's `resources`)
_QUANTITY_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("requests", "cpu", "cpu_request_cores"),
    ("requests", "memory", "memory_request_bytes"),
    ("limits", "cpu", "cpu_limit_cores"),
    ("limits", "memory", "memory_limit_bytes"),
)

# A desired subtree: quantity text at the leaves.
_Tree = dict[str, "str | _Tree"]


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str
    # Among insertions at the same offset, deeper ones must come first: a key added to
    # ``requests`` belongs right after its last line, before a new ``limits`` block.
    depth: int = 0


def desired_resources(recommended: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Canonical quantity text per section and key for the non-null recommended values.

    Why canonical: the same recommendation must always produce the same bytes, so a
    repeated recommendation changes nothing.
    """
    desired: dict[str, dict[str, str]] = {}
    for section, key, field in _QUANTITY_FIELDS:
        value = recommended.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SinkError(f"recommended {field} must be a number or null, got {value!r}")
        text = format_cpu(float(value)) if key == "cpu" else format_memory(int(value))
        desired.setdefault(section, {})[key] = text
    return desired


def same_quantity(key: str, existing: object, desired_text: str) -> bool:
    """Whether a value already in the file means the same quantity as ``desired_text``.

    Keeping the original text in that case ("0.5" stays "0.5" when 500m is wanted)
    avoids spurious diffs.
    """
    if existing is None or isinstance(existing, bool | Mapping | list):
        return False
    try:
        if key == "cpu":
            return math.isclose(
                parse_cpu(str(existing)), parse_cpu(desired_text), rel_tol=1e-9, abs_tol=1e-9
            )
        return parse_memory(str(existing)) == parse_memory(desired_text)
    except (ValueError, ArithmeticError, TypeError, DaytwoError):
        return False


def patch_resources(
    text: str,
    document_index: int,
    kind: str,
    container: str,
    recommended: Mapping[str, Any],
    *,
    where: str = "document",
) -> str:
    """Return ``text`` with ``container``'s requests/limits set to ``recommended``.

    ``document_index`` counts documents as :func:`pipeline.prsink.locate.split_documents`
    does (that is what :func:`~pipeline.prsink.locate.find_workload_document` returns).
    Raises :class:`SinkError` when the document cannot be patched safely; never returns
    text that does not parse back to exactly the intended change. ``where`` (the file's
    path) prefixes error messages about the document's YAML.
    """
    return _rewrite_document(
        text,
        document_index,
        lambda body: patch_document(body, kind, container, recommended, where=where),
    )


def patch_resources_at(
    text: str,
    document_index: int,
    key_path: KeyPath,
    recommended: Mapping[str, Any],
    *,
    where: str = "document",
) -> str:
    """Return ``text`` with the resources mapping at ``key_path`` set to ``recommended``.

    Why: Helm values files and JSON 6902 patches hold a container's resources at a
    path of their own (``app.resources``, ``[0].value``) rather than in a pod template.
    The parent of the last key must exist; the last key is created when missing. Same
    guarantees as :func:`patch_resources`.
    """
    if not key_path or not isinstance(key_path[-1], str):
        raise SinkError(f"key path {key_path!r} must end in a mapping key")

    def patch(body: str) -> str:
        desired = desired_resources(recommended)
        root = _compose_guarded(body, where, mapping=False)
        if not desired:
            return body
        patcher = _DocumentPatcher(body, root, "", "", key_path=key_path)
        new_body = patcher.apply(desired)
        if new_body != body:
            holder_key = str(key_path[-1])
            _verify(body, new_body, lambda doc: _plain_at(doc, key_path[:-1]), holder_key, desired)
        return new_body

    return _rewrite_document(text, document_index, patch)


def _rewrite_document(text: str, document_index: int, rewrite: Callable[[str], str]) -> str:
    """Apply ``rewrite`` to one document's body; the rest of the file stays byte for byte."""
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    chunks = split_documents(text[len(bom) :])
    if not 0 <= document_index < len(chunks):
        raise SinkError(
            f"document index {document_index} out of range: the file has {len(chunks)} document(s)"
        )
    target = chunks[document_index]
    new_body = rewrite(target.body)
    if new_body == target.body:
        return text
    chunks[document_index] = DocumentChunk(target.prefix, new_body)
    result = bom + "".join(chunk.prefix + chunk.body for chunk in chunks)
    if len(split_documents(result[len(bom) :])) != len(chunks):
        raise SinkError("patching would change the number of YAML documents; refusing")
    return result


class EnvVarMissingError(SinkError):
    """The container declares no such environment variable (nothing to patch)."""


def patch_env_value(
    text: str,
    document_index: int,
    kind: str,
    container: str,
    *,
    name: str,
    value: str,
    where: str = "document",
) -> str:
    """Return ``text`` with the ``env`` entry ``name`` of ``container`` set to ``value``.

    Why: a JVM's heap lives in its options (``JAVA_TOOL_OPTIONS``), and a memory limit
    must never change without the heap inside it. Only the value scalar is rewritten
    (in the quoting style it had, when the new value fits it); the result is parsed
    back and must differ from the input in that one value. Raises
    :class:`EnvVarMissingError` when the container has no such variable,
    :class:`SinkError` when it is set from elsewhere (``valueFrom``) or is shared
    through an anchor.
    """
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    chunks = split_documents(text[len(bom) :])
    if not 0 <= document_index < len(chunks):
        raise SinkError(
            f"document index {document_index} out of range: the file has {len(chunks)} document(s)"
        )
    body = chunks[document_index].body
    patcher = _DocumentPatcher(body, _compose_guarded(body, where), kind, container)
    env = _lookup(patcher.container_node, "env")
    entries = env[1].value if env is not None and isinstance(env[1], SequenceNode) else []
    for entry in entries:
        entry_name = _lookup(entry, "name") if isinstance(entry, MappingNode) else None
        if entry_name is None or entry_name[1].value != name:
            continue
        found = _lookup(entry, "value")
        if found is None or not isinstance(found[1], ScalarNode):
            raise SinkError(f"env {name} of container {container!r} has no plain value to patch")
        node = found[1]
        patcher._require_unshared(node, f"env {name}")
        if node.value == value:
            return text
        quoted = _string_in_style(value, node.style)
        new_body = body[: node.start_mark.index] + quoted + body[node.end_mark.index :]
        _verify_env(body, new_body, kind, container=container, name=name, value=value)
        chunks[document_index] = DocumentChunk(chunks[document_index].prefix, new_body)
        return bom + "".join(chunk.prefix + chunk.body for chunk in chunks)
    raise EnvVarMissingError(f"container {container!r} declares no env {name}")


def _verify_env(
    old_body: str, new_body: str, kind: str, *, container: str, name: str, value: str
) -> None:
    loader = YAML(typ="safe", pure=True)
    try:
        expected = loader.load(old_body)
        new = loader.load(new_body)
    except YAMLError as error:
        raise SinkError(f"patched document does not read back: {error}") from error
    for entry in _plain_container(expected, kind, container).get("env") or ():
        if isinstance(entry, dict) and entry.get("name") == name:
            entry["value"] = value
    if expected != new:
        raise SinkError(f"patching env {name} would change more than its value; refusing")


def declared_resources(
    text: str, document_index: int, kind: str, container: str
) -> dict[str, float | int | None]:
    """What the manifest declares for ``container`` now, in base units (None = unset).

    The PR shows these as "current", so a reviewer compares the proposal with the file
    it changes rather than with what an agent observed at run time. An unparsable
    quantity reads as None (the patch replaces it anyway).
    """
    chunks = split_documents(text.removeprefix("\ufeff"))
    if not 0 <= document_index < len(chunks):
        raise SinkError(
            f"document index {document_index} out of range: the file has {len(chunks)} document(s)"
        )
    try:
        resources = _plain_container(load_document(chunks[document_index]), kind, container).get(
            "resources"
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise SinkError(f"container {container!r} not found in the {kind} document") from exc
    sections = resources if isinstance(resources, dict) else {}

    def read(section: str, key: str) -> float | int | None:
        values = sections.get(section)
        raw = values.get(key) if isinstance(values, dict) else None
        if raw is None:
            return None
        try:
            return parse_cpu(str(raw)) if key == "cpu" else parse_memory(str(raw))
        except (ValueError, ArithmeticError, DaytwoError):
            return None

    return {
        "cpu_request_cores": read("requests", "cpu"),
        "cpu_limit_cores": read("limits", "cpu"),
        "memory_request_bytes": read("requests", "memory"),
        "memory_limit_bytes": read("limits", "memory"),
    }


def patch_document(
    body: str,
    kind: str,
    container: str,
    recommended: Mapping[str, Any],
    *,
    where: str = "document",
) -> str:
    """Patch a single YAML document (no ``---`` markers); see :func:`patch_resources`."""
    desired = desired_resources(recommended)
    root = _compose_guarded(body, where)
    if not desired:
        return body
    patcher = _DocumentPatcher(body, root, kind, container)
    new_body = patcher.apply(desired)
    if new_body != body:
        _verify(
            body, new_body, lambda doc: _plain_container(doc, kind, container), "resources", desired
        )
    return new_body


def _compose_guarded(body: str, where: str = "document", *, mapping: bool = True) -> Node:
    """Compose a document after refusing alias bombs, Python tags and duplicate keys."""
    root = guard_document(body, where)
    if mapping and not isinstance(root, MappingNode):
        raise SinkError(f"{where} is not a YAML mapping (not a Kubernetes object)")
    return root


def _walk(node: Node, seen: set[int]) -> Iterator[Node]:
    if id(node) in seen:
        return
    seen.add(id(node))
    yield node
    if isinstance(node, MappingNode):
        for key, value in node.value:
            yield from _walk(key, seen)
            yield from _walk(value, seen)
    elif isinstance(node, SequenceNode):
        for item in node.value:
            yield from _walk(item, seen)


def _reference_counts(root: Node) -> Counter[int]:
    """How many times each node is reached: more than once means it is aliased."""
    counts: Counter[int] = Counter()
    stack: list[Node] = [root]
    while stack:
        node = stack.pop()
        counts[id(node)] += 1
        if counts[id(node)] > 1:
            continue
        if isinstance(node, MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
    return counts


def _lookup(mapping: MappingNode, key: str) -> tuple[ScalarNode, Node] | None:
    for key_node, value_node in mapping.value:
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            return key_node, value_node
    return None


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and str(node.tag) == _NULL_TAG


def _is_empty_flow_mapping(node: Node) -> bool:
    return isinstance(node, MappingNode) and not node.value and bool(node.flow_style)


class _DocumentPatcher:
    """Plans text edits for one document; one instance per patch."""

    def __init__(
        self, body: str, root: Node, kind: str, container: str, *, key_path: KeyPath = ()
    ) -> None:
        self.body = body
        self.root = root
        self.kind = kind
        self.container = container
        self.references = _reference_counts(root)
        self.line_ending = "\r\n" if "\r\n" in body else "\n"
        self.edits: list[_Edit] = []
        if key_path:
            self.what = f"values path {format_key_path(key_path)}"
            self.resources_key = str(key_path[-1])
            self.container_node = self._find_holder(key_path)
        else:
            self.what = f"container {container!r}"
            self.resources_key = "resources"
            self.container_node = self._find_container()
        self.step = self._indent_step(self.container_node) or self._indent_step(root)
        self.step = self.step or _DEFAULT_INDENT_STEP

    # -- navigation -------------------------------------------------------------------

    def _require_unshared(self, node: Node, what: str) -> None:
        if self.references[id(node)] > 1:
            raise SinkError(
                f"{what} of {self.what} is a YAML anchor used elsewhere "
                "(or an alias); patching it would change other places: edit it by hand"
            )

    def _child(self, mapping: Node, key: str, what: str) -> Node:
        if not isinstance(mapping, MappingNode):
            raise SinkError(f"{what} is not a mapping")
        found = _lookup(mapping, key)
        if found is None:
            raise SinkError(f"{what} has no {key!r}")
        return found[1]

    def _find_holder(self, key_path: KeyPath) -> MappingNode:
        """The mapping that holds (or will hold) the resources at ``key_path``."""
        node = self.root
        self._require_unshared(node, "the document")
        for depth, segment in enumerate(key_path[:-1]):
            where = format_key_path(key_path[: depth + 1])
            if isinstance(segment, int):
                if not isinstance(node, SequenceNode) or segment >= len(node.value):
                    raise SinkError(f"{where} does not exist")
                node = node.value[segment]
            else:
                node = self._child(node, segment, where)
            self._require_unshared(node, where)
        if not isinstance(node, MappingNode):
            raise SinkError(f"{format_key_path(key_path[:-1]) or 'the document'} is not a mapping")
        return node

    def _find_container(self) -> MappingNode:
        if not isinstance(self.root, MappingNode):
            raise SinkError("document is not a YAML mapping (not a Kubernetes object)")
        document_kind = _lookup(self.root, "kind")
        if document_kind is None or document_kind[1].value != self.kind:
            raise SinkError(f"document is not a {self.kind}")
        if self.kind not in POD_TEMPLATE_PATHS:
            raise SinkError(f"kind {self.kind!r} is not supported by the patcher")
        node: Node = self.root
        where = self.kind
        chain: list[Node] = [node]
        for key in (*POD_TEMPLATE_PATHS[self.kind], "spec"):
            node = self._child(node, key, where)
            where = f"{where}.{key}"
            chain.append(node)
        names: list[str] = []
        for list_key in ("containers", "initContainers"):
            found = _lookup(node, list_key) if isinstance(node, MappingNode) else None
            if found is None or not isinstance(found[1], SequenceNode):
                continue
            for item in found[1].value:
                if not isinstance(item, MappingNode):
                    continue
                name = _lookup(item, "name")
                if name is None or not isinstance(name[1], ScalarNode):
                    continue
                names.append(str(name[1].value))
                if name[1].value == self.container:
                    for ancestor in (*chain, found[1], item):
                        self._require_unshared(ancestor, "the pod template")
                    return item
        raise SinkError(
            f"{self.kind} has no container named {self.container!r} "
            f"(containers: {', '.join(names) or 'none'})"
        )

    def _indent_step(self, node: Node) -> int:
        """The most common indentation step of nested block mappings under ``node``."""
        steps: Counter[int] = Counter()
        for parent in _walk(node, set()):
            if not isinstance(parent, MappingNode) or parent.flow_style:
                continue
            for key, value in parent.value:
                if isinstance(value, MappingNode) and value.value and not value.flow_style:
                    step = value.value[0][0].start_mark.column - key.start_mark.column
                    if step > 0:
                        steps[step] += 1
        if not steps:
            return 0
        return min(steps.items(), key=lambda item: (-item[1], item[0]))[0]

    # -- text positions ----------------------------------------------------------------

    def _line_end(self, index: int) -> int:
        """Index just after the line break of the line containing ``index`` (or EOF)."""
        if index > 0 and self.body[index - 1] == "\n" and index <= len(self.body):
            return index
        newline = self.body.find("\n", index)
        return len(self.body) if newline < 0 else newline + 1

    def _value_span(self, key_node: Node, value_node: Node) -> tuple[int, int]:
        """Text span of a mapping value; an empty (implicit null) value sits after the colon.

        ruamel puts the marks of an empty scalar at the *next* token, possibly lines
        later, so its position is derived from the key instead.
        """
        start, end = int(value_node.start_mark.index), int(value_node.end_mark.index)
        if isinstance(value_node, ScalarNode) and start == end:
            colon = self.body.index(":", key_node.end_mark.index)
            return colon + 1, colon + 1
        return start, end

    def _last_leaf_end(self, node: Node, key_node: Node | None = None) -> int:
        """Where the text of ``node`` really ends (block collections' marks do not)."""
        self._require_unshared(node, "a value next to the edited lines")
        if isinstance(node, MappingNode) and node.value and not node.flow_style:
            last_key, last_value = node.value[-1]
            return self._last_leaf_end(last_value, last_key)
        if isinstance(node, SequenceNode) and node.value and not node.flow_style:
            return self._last_leaf_end(node.value[-1])
        if isinstance(node, ScalarNode) and node.style in ("|", ">"):
            return self._line_end(node.end_mark.index)
        if key_node is not None:
            return self._value_span(key_node, node)[1]
        return int(node.end_mark.index)

    def _lines(self, key: str, value: str | _Tree, column: int) -> list[str]:
        indent = " " * column
        if isinstance(value, str):
            return [f"{indent}{key}: {value}"]
        lines = [f"{indent}{key}:"]
        for child_key, child_value in value.items():
            lines.extend(self._lines(child_key, child_value, column + self.step))
        return lines

    def _insert_lines(self, at: int, lines: list[str], depth: int) -> None:
        joined = self.line_ending.join(lines)
        if at >= len(self.body) and not self.body.endswith("\n"):
            self.edits.append(_Edit(at, at, self.line_ending + joined, depth))
        else:
            self.edits.append(_Edit(at, at, joined + self.line_ending, depth))

    # -- edits -------------------------------------------------------------------------

    def _insert_entry(self, mapping: MappingNode, key: str, value: str | _Tree, depth: int) -> None:
        """Add ``key: value`` to an existing mapping, in the mapping's own style."""
        if mapping.flow_style or not mapping.value:
            rendered = f"{key}: {_flow(value)}"
            if mapping.value:
                at = int(mapping.value[-1][1].end_mark.index)
                self.edits.append(_Edit(at, at, ", " + rendered, depth))
            else:
                at = self.body.rfind("}", 0, mapping.end_mark.index)
                self.edits.append(_Edit(at, at, rendered, depth))
            return
        column = mapping.value[0][0].start_mark.column
        at = self._line_end(self._last_leaf_end(mapping.value[-1][1], mapping.value[-1][0]))
        self._insert_lines(at, self._lines(key, value, column), depth)

    def append_item(self, key: str, item_lines: list[str]) -> str:
        """Append one item to the block sequence at ``key`` of the holder (created if absent).

        ``item_lines`` are the item's lines relative to its own column (the first one
        follows the dash). The new item copies the dash and indentation of the items
        before it, so the diff is exactly the added lines.
        """
        holder = self.container_node
        found = _lookup(holder, key)
        if found is None:
            if holder.flow_style or not holder.value:
                raise SinkError(f"{self.what} is a flow mapping; add {key!r} by hand")
            column = holder.value[0][0].start_mark.column
            dash = column + self._dash_offset()
            lines = [" " * column + f"{key}:", *self._item_lines(dash, dash + 2, item_lines)]
            at = self._line_end(self._last_leaf_end(holder.value[-1][1], holder.value[-1][0]))
            self._insert_lines(at, lines, depth=0)
            return self._render()
        sequence = found[1]
        self._require_unshared(sequence, key)
        if not isinstance(sequence, SequenceNode) or sequence.flow_style or not sequence.value:
            raise SinkError(f"{key} of {self.what} is not a block sequence; add the entry by hand")
        first = sequence.value[0]
        line_start = self.body.rfind("\n", 0, first.start_mark.index) + 1
        dash = self.body.rfind("-", line_start, first.start_mark.index)
        if dash < 0:  # pragma: no cover - a block sequence item always follows a dash
            raise SinkError(f"{key} of {self.what}: cannot find the item's dash")
        lines = self._item_lines(dash - line_start, first.start_mark.column, item_lines)
        at = self._line_end(self._last_leaf_end(sequence.value[-1]))
        self._insert_lines(at, lines, depth=0)
        return self._render()

    @staticmethod
    def _item_lines(dash_column: int, item_column: int, item_lines: list[str]) -> list[str]:
        gap = max(1, item_column - dash_column - 1)
        head = " " * dash_column + "-" + " " * gap + item_lines[0]
        return [head, *(" " * item_column + line for line in item_lines[1:])]

    def _dash_offset(self) -> int:
        """How far this file indents a sequence's dashes past their key (0 or 2, mostly)."""
        offsets: Counter[int] = Counter()
        for parent in _walk(self.root, set()):
            if not isinstance(parent, MappingNode) or parent.flow_style:
                continue
            for key_node, value in parent.value:
                if isinstance(value, SequenceNode) and value.value and not value.flow_style:
                    line_start = self.body.rfind("\n", 0, value.value[0].start_mark.index) + 1
                    dash = self.body.rfind("-", line_start, value.value[0].start_mark.index)
                    if dash >= 0:
                        offsets[dash - line_start - key_node.start_mark.column] += 1
        return offsets.most_common(1)[0][0] if offsets else 0

    def _replace_empty_value(
        self, parent: MappingNode, key_node: ScalarNode, value_node: Node, value: _Tree, depth: int
    ) -> None:
        """Fill ``key:`` / ``key: {}`` / ``key: null`` with ``value``."""
        start, end = self._value_span(key_node, value_node)
        if parent.flow_style:
            text = _flow(value) if start != end else " " + _flow(value)
            self.edits.append(_Edit(start, end, text, depth))
            return
        line_break = self.body.find("\n", end)
        line_break = len(self.body) if line_break < 0 else line_break
        rest = self.body[end:line_break].rstrip("\r")
        if not rest.strip():
            while start > 0 and self.body[start - 1] in " \t":
                start -= 1
            end = end + len(rest)
        if start != end:
            self.edits.append(_Edit(start, end, "", depth))
        lines: list[str] = []
        for child_key, child_value in value.items():
            lines.extend(
                self._lines(child_key, child_value, key_node.start_mark.column + self.step)
            )
        self._insert_lines(self._line_end(end), lines, depth)

    def _set_scalar(self, key: str, node: Node, desired_text: str, what: str) -> None:
        if not isinstance(node, ScalarNode):
            raise SinkError(f"{what} of {self.what} is not a scalar")
        self._require_unshared(node, what)
        if same_quantity(key, node.value, desired_text):
            return
        if node.style in ("|", ">"):
            raise SinkError(f"{what} of {self.what} is a block scalar")
        quote = node.style if node.style in ('"', "'") else ""
        self.edits.append(
            _Edit(node.start_mark.index, node.end_mark.index, f"{quote}{desired_text}{quote}")
        )

    def _set_section(self, resources: MappingNode, section: str, values: dict[str, str]) -> None:
        found = _lookup(resources, section)
        if found is None:
            self._insert_entry(resources, section, dict(values), depth=1)
            return
        key_node, section_node = found
        self._require_unshared(section_node, f"resources.{section}")
        if _is_null(section_node) or _is_empty_flow_mapping(section_node):
            self._replace_empty_value(resources, key_node, section_node, dict(values), depth=1)
            return
        if not isinstance(section_node, MappingNode):
            raise SinkError(f"resources.{section} of {self.what} is not a mapping")
        for key, text in values.items():
            entry = _lookup(section_node, key)
            if entry is None:
                self._insert_entry(section_node, key, text, depth=2)
            else:
                self._set_scalar(key, entry[1], text, f"resources.{section}.{key}")

    def apply(self, desired: dict[str, dict[str, str]]) -> str:
        tree: _Tree = {section: dict(values) for section, values in desired.items()}
        found = _lookup(self.container_node, self.resources_key)
        if found is None:
            self._insert_resources(tree)
        else:
            key_node, resources = found
            self._require_unshared(resources, self.resources_key)
            if _is_null(resources) or _is_empty_flow_mapping(resources):
                self._replace_empty_value(self.container_node, key_node, resources, tree, depth=0)
            elif isinstance(resources, MappingNode):
                for section, values in desired.items():
                    self._set_section(resources, section, values)
            else:
                raise SinkError(f"{self.resources_key} of {self.what} is not a mapping")
        return self._render()

    def _insert_resources(self, tree: _Tree) -> None:
        """Add a ``resources`` block right after the container's ``image`` (or ``name``)."""
        container = self.container_node
        anchor = _lookup(container, "image") or _lookup(container, "name")
        if container.flow_style or anchor is None:
            self._insert_entry(container, self.resources_key, tree, depth=0)
            return
        self._require_unshared(anchor[1], "the container's image")
        column = container.value[0][0].start_mark.column
        at = self._line_end(self._last_leaf_end(anchor[1], anchor[0]))
        self._insert_lines(at, self._lines(self.resources_key, tree, column), depth=0)

    def _render(self) -> str:
        ordered = sorted(
            enumerate(self.edits), key=lambda item: (item[1].start, -item[1].depth, item[0])
        )
        pieces: list[str] = []
        position = 0
        for _, edit in ordered:
            if edit.start < position:
                raise SinkError("internal error: overlapping edits; refusing to patch")
            pieces.append(self.body[position : edit.start])
            pieces.append(edit.text)
            position = edit.end
        pieces.append(self.body[position:])
        return "".join(pieces)


def _flow(value: str | _Tree) -> str:
    if isinstance(value, str):
        return value
    return "{" + ", ".join(f"{key}: {_flow(child)}" for key, child in value.items()) + "}"


# -- verification ---------------------------------------------------------------------


def _plain_container(document: Any, kind: str, container: str) -> dict[str, Any]:
    node = document
    for key in (*POD_TEMPLATE_PATHS[kind], "spec"):
        node = node[key]
    for list_key in ("containers", "initContainers"):
        for item in node.get(list_key) or ():
            if isinstance(item, dict) and item.get("name") == container:
                return item
    raise KeyError(container)


def _plain_at(document: Any, key_path: KeyPath) -> Any:
    node = document
    for segment in key_path:
        node = node[segment]
    return node


def _normalised(
    document: Any, holder_of: Callable[[Any], Any], key: str, normalise: Callable[[Any], Any]
) -> Any:
    document = copy.deepcopy(document)
    resources = holder_of(document).get(key)
    if isinstance(resources, dict):
        for section in ("requests", "limits"):
            values = resources.get(section)
            if isinstance(values, dict):
                for name in ("cpu", "memory"):
                    if name in values:
                        values[name] = normalise(values[name])
    return document


def _verify(
    old_body: str,
    new_body: str,
    holder_of: Callable[[Any], Any],
    key: str,
    desired: dict[str, dict[str, str]],
) -> None:
    """Parse the result back: only the intended quantities may differ from the input."""
    loader = YAML(typ="safe", pure=True)
    try:
        old = loader.load(old_body)
        new = loader.load(new_body)
        expected = copy.deepcopy(old)
        target = holder_of(expected)
        if not isinstance(target.get(key), dict):
            target[key] = {}
        resources = target[key]
        for section, values in desired.items():
            if not isinstance(resources.get(section), dict):
                resources[section] = {}
            for name, text in values.items():
                if not same_quantity(name, resources[section].get(name), text):
                    resources[section][name] = text
        result = holder_of(new)[key]
        for section, values in desired.items():
            for name, text in values.items():
                actual = result[section][name]
                if not same_quantity(name, actual, text):
                    raise SinkError(
                        f"patched {key}.{section}.{name} reads back as {actual!r}, not {text}"
                    )
    except (YAMLError, KeyError, TypeError, IndexError, AttributeError) as error:
        raise SinkError(f"patched document does not read back: {error}") from error
    if _normalised(expected, holder_of, key, str) != _normalised(new, holder_of, key, str):
        raise SinkError(
            "patched document differs from the original in more than the resources; refusing"
        )


# -- sequence entries: containers, env, kustomization patches ---------------------------


def _append_and_verify(
    text: str,
    document_index: int,
    where: str,
    *,
    make_patcher: Callable[[str, Node], _DocumentPatcher],
    key: str,
    item_lines: list[str],
    expected_change: Callable[[Any], None],
) -> str:
    """Append a sequence item through a patcher, then prove the data changed only so."""

    def rewrite(body: str) -> str:
        root = _compose_guarded(body, where)
        new_body = make_patcher(body, root).append_item(key, item_lines)
        loader = YAML(typ="safe", pure=True)
        try:
            expected = loader.load(body)
            expected_change(expected)
            actual = loader.load(new_body)
        except (YAMLError, KeyError, TypeError, IndexError, AttributeError) as error:
            raise SinkError(f"{where}: adding to {key} does not read back: {error}") from error
        if actual != expected:
            raise SinkError(f"{where}: adding to {key} would change more than that; refusing")
        return new_body

    return _rewrite_document(text, document_index, rewrite)


def add_container_entry(
    text: str, document_index: int, kind: str, container: str, *, where: str = "document"
) -> str:
    """Add ``- name: <container>`` to a (patch) document's ``containers`` list.

    Why: daytwo's own strategic-merge patch file grows one entry per container it
    sizes; Kustomize merges containers by name, so the entry needs nothing else.
    """
    spec_path: KeyPath = (*POD_TEMPLATE_PATHS[kind], "spec", "containers")

    def change(document: Any) -> None:
        spec = _plain_at(document, spec_path[:-1])
        spec.setdefault("containers", []).append({"name": container})

    return _append_and_verify(
        text,
        document_index,
        where,
        make_patcher=lambda body, root: _DocumentPatcher(
            body, root, kind, container, key_path=spec_path
        ),
        key="containers",
        item_lines=[f"name: {json.dumps(container) if _needs_quotes(container) else container}"],
        expected_change=change,
    )


def add_env_entry(
    text: str,
    document_index: int,
    kind: str,
    container: str,
    *,
    name: str,
    value: str,
    where: str = "document",
) -> str:
    """Add ``{name, value}`` to a container's ``env`` (creating ``env`` when absent).

    Why: in a Kustomize overlay the JVM options variable usually lives in the base; the
    overlay's strategic-merge patch overrides it by name, leaving the base untouched.
    """

    def change(document: Any) -> None:
        _plain_container(document, kind, container).setdefault("env", []).append(
            {"name": name, "value": value}
        )

    return _append_and_verify(
        text,
        document_index,
        where,
        make_patcher=lambda body, root: _DocumentPatcher(body, root, kind, container),
        key="env",
        item_lines=[f"name: {name}", f"value: {json.dumps(value, ensure_ascii=False)}"],
        expected_change=change,
    )


def list_patch_in_kustomization(text: str, patch_file: str, *, where: str = "kustomization") -> str:
    """List ``patch_file`` (relative to the kustomization) as a patch, in the file's style.

    Appends ``- path: <file>`` to ``patches:``, or ``- <file>`` to the older
    ``patchesStrategicMerge:`` when only that one is used, or adds ``patches:``.
    """
    data = load_document(DocumentChunk("", text.removeprefix("\ufeff")))
    if not isinstance(data, Mapping):
        raise SinkError(f"{where} is not a mapping")
    listed = [entry.get("path") for entry in data.get("patches") or () if isinstance(entry, dict)]
    if patch_file in listed or patch_file in (data.get("patchesStrategicMerge") or ()):
        return text
    legacy = "patchesStrategicMerge" in data and "patches" not in data
    key = "patchesStrategicMerge" if legacy else "patches"
    entry: Any = patch_file if legacy else {"path": patch_file}
    quoted = json.dumps(patch_file) if _needs_quotes(patch_file) else patch_file

    def change(document: Any) -> None:
        if document.get(key) is None:
            document[key] = []
        document[key].append(entry)

    return _append_and_verify(
        text,
        0,
        where,
        make_patcher=lambda body, root: _DocumentPatcher(body, root, "", "", key_path=(key,)),
        key=key,
        item_lines=[quoted if legacy else f"path: {quoted}"],
        expected_change=change,
    )


def _string_in_style(value: str, style: str | None) -> str:
    """``value`` as a YAML scalar in the quoting style the old value used, where it fits."""
    if style == "'" and "\n" not in value:
        return "'" + value.replace("'", "''") + "'"
    if style is None and value == value.strip() and not _needs_quotes(value) and "#" not in value:
        return value
    return json.dumps(value, ensure_ascii=False)


def _needs_quotes(text: str) -> bool:
    """Whether a plain scalar would not read back as this exact string."""
    try:
        return bool(YAML(typ="safe", pure=True).load(f"k: {text}\n") != {"k": text})
    except YAMLError:
        return True


def strategic_merge_patch_text(new_patch: NewPatchFile, container: str, workload: str) -> str:
    """The text of a new overlay patch file naming the workload and one container.

    The resources themselves are then written by :func:`patch_resources`, so a new file
    and an existing one get the same canonical quantities.
    """
    lines = [
        f"# Added by daytwo: resources of {workload} in this overlay only.",
        f"apiVersion: {new_patch.api_version}",
        f"kind: {new_patch.kind}",
        "metadata:",
        f"  name: {new_patch.name}",
    ]
    if new_patch.namespace:
        lines.append(f"  namespace: {new_patch.namespace}")
    depth = 0
    for key in (*POD_TEMPLATE_PATHS[new_patch.kind], "spec"):
        lines.append("  " * depth + f"{key}:")
        depth += 1
    lines.append("  " * depth + "containers:")
    lines.append("  " * depth + f"  - name: {container}")
    return "\n".join(lines) + "\n"


# -- JVM options -------------------------------------------------------------------------

#: Environment variables a JVM reads options from, in the order daytwo prefers them.
JVM_OPTIONS_VARIABLES = ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "JAVA_OPTS", "_JAVA_OPTIONS")

_SIZED_OPTION_PREFIXES = ("-Xmx", "-Xms", "-Xss", "-Xmn")


def jvm_option_key(option: str) -> str:
    """What an option sets, so that ``-Xmx1g`` replaces ``-Xmx768m``.

    ``-XX:+UseG1GC`` and ``-XX:-UseG1GC`` share a key; ``-Dname=value`` is keyed by
    name; anything else (``-Xlog:...``, ``-verbose:gc``) is its own key.
    """
    if option.startswith(_SIZED_OPTION_PREFIXES):
        return option[:4]
    if option.startswith("-XX:"):
        return "-XX:" + option[4:].lstrip("+-").split("=", 1)[0]
    if option.startswith("-D"):
        return option.split("=", 1)[0]
    return option


def merge_jvm_options(existing: str, changed: Sequence[str]) -> str:
    """``existing`` with each option of ``changed`` replacing its namesake, or appended.

    Why: the variable a team uses (``JAVA_OPTS`` say) holds more than the heap; the PR
    must change only the options the recommendation changes, in place, so the reviewer
    sees ``-Xmx768m`` become ``-Xmx1g`` and nothing else move.
    """
    tokens = existing.split()
    wanted = {jvm_option_key(option): option for option in changed}
    merged: list[str] = []
    placed: set[str] = set()
    for token in tokens:
        key = jvm_option_key(token)
        if key not in wanted:
            merged.append(token)
        elif key not in placed:
            merged.append(wanted[key])
            placed.add(key)
    merged.extend(option for key, option in wanted.items() if key not in placed)
    return " ".join(merged)


# -- one workload, every container ------------------------------------------------------


@dataclass(frozen=True)
class ContainerChange:
    """What to write for one container: quantities and, for a JVM, its options.

    ``recommended`` has the recommendation's keys (``cpu_request_cores``, ...; None =
    leave as is). ``jvm_options`` is the complete ``JAVA_TOOL_OPTIONS`` value and
    ``jvm_changed`` the options in it that change; when the manifest already sets a
    JVM options variable, ``jvm_changed`` is merged into its value (minimal diff),
    otherwise ``jvm_options`` is used whole.
    """

    container: str
    recommended: Mapping[str, Any]
    jvm_options: str | None = None
    jvm_changed: tuple[str, ...] = ()

    @classmethod
    def from_recommendation(cls, recommendation: Mapping[str, Any]) -> ContainerChange:
        """Build from one recommendation object of the contract (``jvm_options`` optional)."""
        jvm = recommendation.get("jvm_options")
        if not isinstance(jvm, Mapping):
            jvm = {}
        options = str(jvm["java_tool_options"]) if jvm.get("java_tool_options") else None
        changed = tuple(str(option) for option in jvm.get("changed") or ())
        return cls(
            str(recommendation["container"]), recommendation["recommended"], options, changed
        )


@dataclass(frozen=True)
class WorkloadPatch:
    """The files to write for one workload, where each container's values went, and notes.

    ``files`` holds only files whose text changes (new files included), full text.
    ``notes`` are sentences for the PR body (a JVM variable that could not be set).
    """

    files: dict[str, str]
    sources: dict[str, SourceOfTruth]
    jvm_variables: dict[str, str]
    notes: tuple[str, ...]


def patch_workload(
    files: Mapping[str, str],
    workload: WorkloadId | str,
    changes: Sequence[ContainerChange],
    *,
    values_map: Mapping[str, ValuesRef | Mapping[str, str]] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> WorkloadPatch:
    """Locate and patch every container of one workload; pure over ``files``.

    Why one call: containers of a workload can live in different places (an overlay
    patch for one, the base for another) and a new overlay patch file must be created
    once and listed once. Each container is located again after the previous one was
    written, so the second container finds the patch file the first one created.
    Raises :class:`SinkError` (or :class:`~pipeline.prsink.locate.AmbiguousSourceError`,
    :class:`~pipeline.prsink.locate.SourceNotFoundError`) with the file named; nothing
    is returned half done.
    """
    workload_id = WorkloadId.parse(workload) if isinstance(workload, str) else workload
    current = dict(files)
    sources: dict[str, SourceOfTruth] = {}
    jvm_variables: dict[str, str] = {}
    notes: list[str] = []
    for change in changes:
        source = locate_source(
            current, workload_id, change.container, values_map=values_map, annotations=annotations
        )
        sources[change.container] = source
        _write_resources(current, source, change, str(workload_id))
        if change.jvm_options or change.jvm_changed:
            variable, note = _write_jvm_options(current, source, change)
            if variable:
                jvm_variables[change.container] = variable
            if note:
                notes.append(note)
    changed = {path: text for path, text in current.items() if files.get(path) != text}
    return WorkloadPatch(changed, sources, jvm_variables, tuple(notes))


def _write_resources(
    current: dict[str, str], source: SourceOfTruth, change: ContainerChange, workload: str
) -> None:
    if not desired_resources(change.recommended):
        return
    path = source.path
    if source.how in ("helm-values", "kustomize-json6902"):
        current[path] = patch_resources_at(
            current[path], source.document_index, source.key_path, change.recommended, where=path
        )
        return
    if source.how == "kustomize-new-patch" and source.new_patch is not None:
        _ensure_patch_file(current, source, source.new_patch, workload)
    current[path] = patch_resources(
        current[path],
        source.document_index,
        source.kind,
        source.container,
        change.recommended,
        where=path,
    )


def _ensure_patch_file(
    current: dict[str, str], source: SourceOfTruth, new_patch: NewPatchFile, workload: str
) -> None:
    """Create daytwo's overlay patch (and list it), or add the container to it."""
    path = source.path
    if path not in current:
        current[path] = strategic_merge_patch_text(new_patch, source.container, workload)
    else:
        document = load_document(split_documents(current[path])[source.document_index])
        names = [item.get("name") for item in _containers_in(document, source.kind)]
        if source.container not in names:
            current[path] = add_container_entry(
                current[path], source.document_index, source.kind, source.container, where=path
            )
    kustomization = new_patch.kustomization
    relative = posixpath.relpath(path, posixpath.dirname(kustomization) or ".")
    current[kustomization] = list_patch_in_kustomization(
        current[kustomization], relative, where=kustomization
    )


def _containers_in(document: Any, kind: str) -> list[dict[str, Any]]:
    try:
        spec = _plain_at(document, (*POD_TEMPLATE_PATHS[kind], "spec"))
    except (KeyError, TypeError, IndexError):
        return []
    if not isinstance(spec, dict):
        return []
    return [
        item
        for key in ("containers", "initContainers")
        for item in spec.get(key) or ()
        if isinstance(item, dict)
    ]


def _env_values(files: Mapping[str, str], location: Location, kind: str, container: str) -> Any:
    """The container's env as ``{name: entry}`` in one document ({} when absent)."""
    text = files.get(location.path)
    if text is None:
        return {}
    chunks = split_documents(text.removeprefix("\ufeff"))
    document = load_document(chunks[location.document_index])
    for item in _containers_in(document, kind):
        if item.get("name") == container:
            return {
                entry.get("name"): entry
                for entry in item.get("env") or ()
                if isinstance(entry, dict)
            }
    return {}


def _write_jvm_options(
    current: dict[str, str], source: SourceOfTruth, change: ContainerChange
) -> tuple[str | None, str | None]:
    """Set the JVM options variable next to the resources; a note when it cannot."""
    container = change.container
    if source.how in ("helm-values", "kustomize-json6902"):
        return None, (
            f"container `{container}`: JVM options are not patched in {source.describe()}; "
            "set them in the same change as the memory limit"
        )
    here = _env_values(
        current, Location(source.path, source.document_index), source.kind, container
    )
    base: dict[Any, Any] = {}
    if source.base is not None:
        base = _env_values(current, source.base, source.kind, container)
    variable = next((v for v in JVM_OPTIONS_VARIABLES if v in here), None)
    variable = variable or next((v for v in JVM_OPTIONS_VARIABLES if v in base), None)
    if variable is None:
        return None, (
            f"container `{container}` declares none of {', '.join(JVM_OPTIONS_VARIABLES)}; set "
            "`JAVA_TOOL_OPTIONS` as shown in the same change as the memory limit, or the JVM "
            "keeps its old heap inside the new limit"
        )
    entry = here.get(variable) or base.get(variable)
    existing = entry.get("value") if isinstance(entry, dict) else None
    if isinstance(existing, str) and change.jvm_changed:
        value = merge_jvm_options(existing, change.jvm_changed)
    elif change.jvm_options:
        value = change.jvm_options
    else:
        value = " ".join(change.jvm_changed)
    writer = patch_env_value if variable in here else add_env_entry
    current[source.path] = writer(
        current[source.path],
        source.document_index,
        source.kind,
        container,
        name=variable,
        value=value,
        where=source.path,
    )
    return variable, None
