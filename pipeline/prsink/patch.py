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
"""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.core.quantity import format_cpu, format_memory, parse_cpu, parse_memory
from pipeline.errors import DaytwoError, SinkError
from pipeline.prsink.locate import (
    POD_TEMPLATE_PATHS,
    DocumentChunk,
    load_document,
    split_documents,
)

#: More aliases than this in one document is refused (alias bombs, or YAML too clever
#: to patch safely); real Kubernetes manifests use none.
MAX_ALIASES = 64

_NULL_TAG = "tag:yaml.org,2002:null"
_PYTHON_TAG_PREFIX = "tag:yaml.org,2002:python/"
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
    text: str, document_index: int, kind: str, container: str, recommended: Mapping[str, Any]
) -> str:
    """Return ``text`` with ``container``'s requests/limits set to ``recommended``.

    ``document_index`` counts documents as :func:`pipeline.prsink.locate.split_documents`
    does (that is what :func:`~pipeline.prsink.locate.find_workload_document` returns).
    Raises :class:`SinkError` when the document cannot be patched safely; never returns
    text that does not parse back to exactly the intended change.
    """
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    chunks = split_documents(text[len(bom) :])
    if not 0 <= document_index < len(chunks):
        raise SinkError(
            f"document index {document_index} out of range: the file has {len(chunks)} document(s)"
        )
    target = chunks[document_index]
    new_body = patch_document(target.body, kind, container, recommended)
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
    text: str, document_index: int, kind: str, container: str, *, name: str, value: str
) -> str:
    """Return ``text`` with the ``env`` entry ``name`` of ``container`` set to ``value``.

    Why: a JVM's heap lives in its options (``JAVA_TOOL_OPTIONS``), and a memory limit
    must never change without the heap inside it. Only the value scalar is rewritten
    (as a double-quoted YAML string); the result is parsed back and must differ from
    the input in that one value. Raises :class:`EnvVarMissingError` when the
    container has no such variable, :class:`SinkError` when it is set from elsewhere
    (``valueFrom``) or is shared through an anchor.
    """
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    chunks = split_documents(text[len(bom) :])
    if not 0 <= document_index < len(chunks):
        raise SinkError(
            f"document index {document_index} out of range: the file has {len(chunks)} document(s)"
        )
    body = chunks[document_index].body
    patcher = _DocumentPatcher(body, _compose_guarded(body), kind, container)
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
        quoted = json.dumps(value, ensure_ascii=False)
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


def patch_document(body: str, kind: str, container: str, recommended: Mapping[str, Any]) -> str:
    """Patch a single YAML document (no ``---`` markers); see :func:`patch_resources`."""
    desired = desired_resources(recommended)
    root = _compose_guarded(body)
    if not desired:
        return body
    patcher = _DocumentPatcher(body, root, kind, container)
    new_body = patcher.apply(desired)
    if new_body != body:
        _verify(body, new_body, kind, container, desired)
    return new_body


def _compose_guarded(body: str) -> MappingNode:
    """Compose a document after refusing alias bombs and Python tags."""
    yaml = YAML(typ="safe", pure=True)
    try:
        aliases = sum(1 for event in yaml.parse(body) if isinstance(event, AliasEvent))
        if aliases > MAX_ALIASES:
            raise SinkError(
                f"document uses {aliases} YAML aliases (more than {MAX_ALIASES}); "
                "refusing to patch it"
            )
        root = yaml.compose(body)
    except YAMLError as error:
        raise SinkError(f"document is not valid YAML: {error}") from error
    if not isinstance(root, MappingNode):
        raise SinkError("document is not a YAML mapping (not a Kubernetes object)")
    for node in _walk(root, set()):
        tag = str(node.tag)
        if tag.startswith(_PYTHON_TAG_PREFIX) or tag.startswith("!!python/"):
            line = node.start_mark.line + 1
            raise SinkError(
                f"document uses the Python-specific tag {tag!r} (line {line}); refusing to patch it"
            )
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

    def __init__(self, body: str, root: MappingNode, kind: str, container: str) -> None:
        self.body = body
        self.root = root
        self.kind = kind
        self.container = container
        self.references = _reference_counts(root)
        self.line_ending = "\r\n" if "\r\n" in body else "\n"
        self.edits: list[_Edit] = []
        self.container_node = self._find_container()
        self.step = self._indent_step(self.container_node) or self._indent_step(root)
        self.step = self.step or _DEFAULT_INDENT_STEP

    # -- navigation -------------------------------------------------------------------

    def _require_unshared(self, node: Node, what: str) -> None:
        if self.references[id(node)] > 1:
            raise SinkError(
                f"{what} of container {self.container!r} is a YAML anchor used elsewhere "
                "(or an alias); patching it would change other places: edit it by hand"
            )

    def _child(self, mapping: Node, key: str, what: str) -> Node:
        if not isinstance(mapping, MappingNode):
            raise SinkError(f"{what} is not a mapping")
        found = _lookup(mapping, key)
        if found is None:
            raise SinkError(f"{what} has no {key!r}")
        return found[1]

    def _find_container(self) -> MappingNode:
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
            raise SinkError(f"{what} of container {self.container!r} is not a scalar")
        self._require_unshared(node, what)
        if same_quantity(key, node.value, desired_text):
            return
        if node.style in ("|", ">"):
            raise SinkError(f"{what} of container {self.container!r} is a block scalar")
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
            raise SinkError(f"resources.{section} of container {self.container!r} is not a mapping")
        for key, text in values.items():
            entry = _lookup(section_node, key)
            if entry is None:
                self._insert_entry(section_node, key, text, depth=2)
            else:
                self._set_scalar(key, entry[1], text, f"resources.{section}.{key}")

    def apply(self, desired: dict[str, dict[str, str]]) -> str:
        tree: _Tree = {section: dict(values) for section, values in desired.items()}
        found = _lookup(self.container_node, "resources")
        if found is None:
            self._insert_resources(tree)
        else:
            key_node, resources = found
            self._require_unshared(resources, "resources")
            if _is_null(resources) or _is_empty_flow_mapping(resources):
                self._replace_empty_value(self.container_node, key_node, resources, tree, depth=0)
            elif isinstance(resources, MappingNode):
                for section, values in desired.items():
                    self._set_section(resources, section, values)
            else:
                raise SinkError(f"resources of container {self.container!r} is not a mapping")
        return self._render()

    def _insert_resources(self, tree: _Tree) -> None:
        """Add a ``resources`` block right after the container's ``image`` (or ``name``)."""
        container = self.container_node
        if container.flow_style:
            self._insert_entry(container, "resources", tree, depth=0)
            return
        anchor = _lookup(container, "image") or _lookup(container, "name")
        if anchor is None:  # pragma: no cover - _find_container guarantees a name
            raise SinkError(f"container {self.container!r} has no name")
        self._require_unshared(anchor[1], "the container's image")
        column = container.value[0][0].start_mark.column
        at = self._line_end(self._last_leaf_end(anchor[1], anchor[0]))
        self._insert_lines(at, self._lines("resources", tree, column), depth=0)

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


def _normalised(document: Any, kind: str, container: str, normalise: Callable[[Any], Any]) -> Any:
    document = copy.deepcopy(document)
    resources = _plain_container(document, kind, container).get("resources")
    if isinstance(resources, dict):
        for section in ("requests", "limits"):
            values = resources.get(section)
            if isinstance(values, dict):
                for key in ("cpu", "memory"):
                    if key in values:
                        values[key] = normalise(values[key])
    return document


def _verify(
    old_body: str, new_body: str, kind: str, container: str, desired: dict[str, dict[str, str]]
) -> None:
    """Parse the result back: only the intended quantities may differ from the input."""
    loader = YAML(typ="safe", pure=True)
    try:
        old = loader.load(old_body)
        new = loader.load(new_body)
        expected = copy.deepcopy(old)
        target = _plain_container(expected, kind, container)
        if not isinstance(target.get("resources"), dict):
            target["resources"] = {}
        resources = target["resources"]
        for section, values in desired.items():
            if not isinstance(resources.get(section), dict):
                resources[section] = {}
            for key, text in values.items():
                if not same_quantity(key, resources[section].get(key), text):
                    resources[section][key] = text
        result_container = _plain_container(new, kind, container)
        for section, values in desired.items():
            for key, text in values.items():
                actual = result_container["resources"][section][key]
                if not same_quantity(key, actual, text):
                    raise SinkError(
                        f"patched resources.{section}.{key} reads back as {actual!r}, not {text}"
                    )
    except (YAMLError, KeyError, TypeError) as error:
        raise SinkError(f"patched document does not read back: {error}") from error
    if _normalised(expected, kind, container, str) != _normalised(new, kind, container, str):
        raise SinkError(
            "patched document differs from the original in more than the resources; refusing"
        )
