"""Find the YAML document that declares a workload in a GitOps repository.

The sink must change exactly one document: the one Kubernetes would apply for the
workload the recommendation is about. Matching is deliberately strict (kind, name and
namespace all equal) and ambiguity is reported, never guessed, because a PR against the
wrong copy of a manifest is worse than no PR.

Three kinds of source of truth are understood (:func:`locate_source`): plain
manifests, Kustomize trees (base + overlays: the overlay that builds the workload's
namespace and name is found, and its patch that sets resources, if any) and Helm values
files (named by a mapping or the ``daytwo.io/values-path`` annotation). A document
without a namespace is in ``default`` unless a kustomization sets one. Helm templates,
which are not YAML until rendered, are skipped.

Document indexes count the chunks produced by :func:`split_documents`, which both this
module and :mod:`pipeline.prsink.patch` use, so an index found here always names the
same bytes there.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from pipeline.errors import ConfigError, SinkError

#: Where the pod template sits inside each supported workload kind.
POD_TEMPLATE_PATHS: Mapping[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Rollout": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}

#: Directory names never searched: git's own data and daytwo's PR notes.
SKIPPED_DIRECTORIES = frozenset({".git", ".daytwo"})

YAML_SUFFIXES = (".yaml", ".yml")

# A line that starts a new document ("---") or ends one ("..."): the YAML spec forbids
# both at column 0 inside any scalar, so a plain line scan finds every boundary.
_DOCUMENT_MARKER = re.compile(r"^(?:---|\.\.\.)(?=[ \t\r\n]|$)", re.MULTILINE)


@dataclass(frozen=True)
class WorkloadId:
    """A parsed workload id ``cluster/namespace/Kind/name`` (the key of every topic)."""

    cluster: str
    namespace: str
    kind: str
    name: str

    @classmethod
    def parse(cls, text: str) -> WorkloadId:
        """Split a workload id; a malformed one is a :class:`SinkError` naming it."""
        parts = text.split("/")
        if len(parts) != 4 or not all(parts):
            raise SinkError(f"workload id {text!r} is not of the form cluster/namespace/Kind/name")
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.cluster}/{self.namespace}/{self.kind}/{self.name}"


@dataclass(frozen=True)
class Location:
    """Where a workload is declared: a repo-relative POSIX path and a document index."""

    path: str
    document_index: int


@dataclass(frozen=True)
class DocumentChunk:
    """One document of a multi-document file and the exact text around it.

    ``prefix`` holds the document marker line (``---`` with any comment on it), or is
    empty for the first document; ``body`` is everything up to the next marker. Joining
    ``prefix + body`` of all chunks gives back the file byte for byte.
    """

    prefix: str
    body: str


def split_documents(text: str) -> list[DocumentChunk]:
    """Cut a YAML stream into documents without parsing it, keeping every byte.

    Why not ``load_all``: the patcher must rewrite one document and leave the others and
    their separators untouched, so it needs the exact text span of each document.
    """
    chunks: list[DocumentChunk] = []
    prefix = ""
    position = 0
    for marker in _DOCUMENT_MARKER.finditer(text):
        chunks.append(DocumentChunk(prefix, text[position : marker.start()]))
        line_end = text.find("\n", marker.start())
        line_end = len(text) if line_end < 0 else line_end + 1
        marker_line = text[marker.start() : line_end]
        if marker_line.startswith("---") and _marker_line_has_content(marker_line):
            # "--- {a: 1}" or "--- !tag": the content belongs to the document body.
            prefix = ""
            position = marker.start()
        else:
            prefix = marker_line
            position = line_end
    chunks.append(DocumentChunk(prefix, text[position:]))
    return chunks


def _marker_line_has_content(marker_line: str) -> bool:
    rest = marker_line[3:].strip()
    return bool(rest) and not rest.startswith("#")


def _safe_loader() -> YAML:
    return YAML(typ="safe", pure=True)


def load_document(chunk: DocumentChunk) -> Any:
    """Parse one chunk with the safe loader (no Python tags, no custom constructors)."""
    return _safe_loader().load(chunk.body)


def declares_workload(document: Any, workload: WorkloadId) -> bool:
    """Whether one parsed document is the manifest of ``workload``.

    A document without a namespace counts as ``default``, as ``kubectl apply`` would
    place it without ``-n``.
    """
    if not isinstance(document, Mapping) or document.get("kind") != workload.kind:
        return False
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("name") != workload.name:
        return False
    namespace = metadata.get("namespace") or "default"
    return bool(namespace == workload.namespace)


def find_workload_document(files: Iterable[tuple[str, str]], workload: WorkloadId) -> Location:
    """Find the single document declaring ``workload`` among ``(path, text)`` pairs.

    Pure: the caller reads the files (from a directory or from a git ref). Files that
    are not valid YAML (Helm templates, say) are skipped but named in the error when
    nothing matches, so the user sees why a manifest was not found.
    """
    if workload.kind not in POD_TEMPLATE_PATHS:
        supported = ", ".join(sorted(POD_TEMPLATE_PATHS))
        raise SinkError(
            f"workload {workload} has kind {workload.kind!r}; the sink patches only {supported}"
        )
    matches: list[Location] = []
    unparsable: list[str] = []
    searched = 0
    for path, text in files:
        searched += 1
        # Names are DNS labels and never need escaping, so a file that does not contain
        # the name as text cannot declare the workload: skip parsing it.
        if workload.name not in text:
            continue
        for index, chunk in enumerate(split_documents(text)):
            try:
                document = load_document(chunk)
            except YAMLError:
                unparsable.append(f"{path} (document {index})")
                continue
            if declares_workload(document, workload):
                matches.append(Location(path, index))
    if len(matches) > 1:
        listed = "; ".join(f"{m.path} (document {m.document_index})" for m in matches)
        raise SinkError(
            f"workload {workload} is declared {len(matches)} times: {listed}; "
            "remove the duplicate or point the sink at one directory"
        )
    if not matches:
        message = (
            f"no {workload.kind} named {workload.name!r} in namespace {workload.namespace!r} "
            f"among {searched} YAML file(s)"
        )
        if unparsable:
            message += "; skipped as not valid YAML: " + ", ".join(unparsable)
        raise SinkError(message)
    return matches[0]


def iter_manifest_files(root: Path) -> Iterator[Path]:
    """Yield every ``*.yaml`` / ``*.yml`` under ``root``, sorted, skipping .git and .daytwo."""
    for directory, subdirectories, filenames in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if d not in SKIPPED_DIRECTORIES)
        for filename in sorted(filenames):
            if filename.endswith(YAML_SUFFIXES):
                yield Path(directory) / filename


def is_manifest_path(relative_path: str) -> bool:
    """Whether a repo-relative POSIX path is one :func:`locate_workload` would search."""
    parts = relative_path.split("/")
    return relative_path.endswith(YAML_SUFFIXES) and not any(
        part in SKIPPED_DIRECTORIES for part in parts[:-1]
    )


def locate_workload(root: Path, workload: WorkloadId | str) -> Location:
    """Find the document declaring ``workload`` in the plain manifests under ``root``.

    The returned path is relative to ``root`` in POSIX form, ready for git.
    """
    workload_id = WorkloadId.parse(workload) if isinstance(workload, str) else workload

    def read_all() -> Iterator[tuple[str, str]]:
        for path in iter_manifest_files(root):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            yield path.relative_to(root).as_posix(), text

    return find_workload_document(read_all(), workload_id)


# -- hostile YAML ----------------------------------------------------------------------

#: More aliases than this in one document is refused (alias bombs, or YAML too clever
#: to patch safely); real Kubernetes manifests use a handful at most.
MAX_ALIASES = 64

#: More nodes than this once every alias is expanded is refused: a handful of aliases
#: nested a few levels deep (billion laughs) expands to millions of nodes, and every
#: consumer that walks the data (kustomize, kubectl, our own verification) pays for it.
MAX_EXPANDED_NODES = 100_000

_PYTHON_TAG_MARKERS = ("tag:yaml.org,2002:python/", "!!python/")


class HostileYamlError(SinkError):
    """A document uses Python tags, an alias bomb or duplicate keys; it is never patched."""


def guard_document(text: str, where: str) -> Node:
    """Compose one YAML document after refusing what no Kubernetes file needs.

    Why: the sink reads files other people wrote and writes back into them; a Python tag
    could execute code in a less careful reader, an alias bomb stalls every tool that
    expands it, and a duplicate key means two readers may disagree on the value. The
    error names ``where`` (file and document) so the user can fix the right file.
    Returns the composed root node (None-free: an empty document is an error).
    """
    yaml = YAML(typ="safe", pure=True)
    try:
        aliases = sum(1 for event in yaml.parse(text) if isinstance(event, AliasEvent))
        if aliases > MAX_ALIASES:
            raise HostileYamlError(
                f"{where}: {aliases} YAML aliases (more than {MAX_ALIASES}); refusing to read it"
            )
        root = yaml.compose(text)
    except YAMLError as error:
        raise SinkError(f"{where} is not valid YAML: {error}") from error
    if root is None:
        raise SinkError(f"{where} is an empty YAML document")
    if not isinstance(root, Node):  # pragma: no cover - compose returns nodes
        raise SinkError(f"{where} did not compose to a YAML node")
    expanded = _expanded_size(root, {})
    if expanded < 0:
        raise HostileYamlError(f"{where}: an alias refers to its own ancestor; refusing to read it")
    if expanded > MAX_EXPANDED_NODES:
        raise HostileYamlError(
            f"{where}: aliases expand to {expanded} nodes (more than {MAX_EXPANDED_NODES}); "
            "this looks like an alias bomb, refusing to read it"
        )
    for node in _unique_nodes(root):
        tag = str(node.tag)
        if tag.startswith(_PYTHON_TAG_MARKERS):
            raise HostileYamlError(
                f"{where} uses the Python-specific tag {tag!r} (line {node.start_mark.line + 1}); "
                "refusing to read it"
            )
    try:
        yaml.load(text)  # the safe constructor refuses duplicate keys and unknown tags
    except YAMLError as error:
        raise HostileYamlError(f"{where} cannot be read safely: {error}") from error
    return root


def load_guarded(text: str, where: str) -> Any:
    """:func:`guard_document`, then the plain data (dicts, lists, scalars)."""
    guard_document(text, where)
    return _safe_loader().load(text)


def _expanded_size(node: Node, memo: dict[int, int]) -> int:
    """Node count with every alias expanded, memoised so the bomb is never expanded.

    A node met again while it is still being counted is an alias to an ancestor (a
    recursive structure): no Kubernetes file needs one and naive readers loop on it,
    so it is reported as -1 and refused by the caller.
    """
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = -1  # in progress: meeting it again means recursion
    size = 1
    children: list[Node] = []
    if isinstance(node, MappingNode):
        children = [part for pair in node.value for part in pair]
    elif isinstance(node, SequenceNode):
        children = list(node.value)
    for child in children:
        child_size = _expanded_size(child, memo)
        if child_size < 0:
            return -1
        size = min(size + child_size, MAX_EXPANDED_NODES + 1)
    memo[id(node)] = size
    return size


def _unique_nodes(root: Node) -> Iterator[Node]:
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)


# -- sources of truth --------------------------------------------------------------------

#: The annotation that names a Helm values file and the YAML path of the resources in it,
#: e.g. ``charts/shop/values-prod.yaml#checkout.app.resources``. A container-specific
#: form ``daytwo.io/values-path.<container>`` wins over the general one.
VALUES_PATH_ANNOTATION = "daytwo.io/values-path"

KUSTOMIZATION_FILENAMES = ("kustomization.yaml", "kustomization.yml")

SourceKind = Literal[
    "manifest", "kustomize-patch", "kustomize-json6902", "kustomize-new-patch", "helm-values"
]

KeyPath = tuple[str | int, ...]


class AmbiguousSourceError(SinkError):
    """Two or more places could be the source of truth; the sink never guesses."""

    def __init__(self, message: str, candidates: Iterable[str]) -> None:
        super().__init__(message)
        self.candidates = tuple(candidates)


class SourceNotFoundError(SinkError):
    """No place declares the workload's resources; the message says where it looked."""


@dataclass(frozen=True)
class ValuesRef:
    """A Helm values file and the key path of one container's ``resources`` mapping in it."""

    file: str
    key_path: KeyPath

    @classmethod
    def parse(cls, text: str) -> ValuesRef:
        """Read ``file#a.b[0].resources`` (the annotation's format); errors name the text."""
        file, _, path = text.partition("#")
        if not file.strip() or not path.strip():
            raise ConfigError(
                f"values path {text!r} must look like 'values.yaml#key.path.to.resources'"
            )
        return cls(file.strip().removeprefix("./"), parse_key_path(path.strip()))

    def __str__(self) -> str:
        return f"{self.file}#{format_key_path(self.key_path)}"


_KEY_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_key_path(text: str) -> KeyPath:
    """``a.b[0].c`` → ``("a", "b", 0, "c")``; a malformed path is a :class:`ConfigError`."""
    segments: list[str | int] = []
    position = 0
    while position < len(text):
        if text[position] == "." and segments and position + 1 < len(text):
            position += 1
        match = _KEY_SEGMENT.match(text, position)
        if match is None:
            raise ConfigError(f"YAML path {text!r} is malformed at character {position + 1}")
        segments.append(match[1] if match[1] is not None else int(match[2]))
        position = match.end()
    if not segments:
        raise ConfigError("YAML path is empty")
    return tuple(segments)


def format_key_path(key_path: KeyPath) -> str:
    """The inverse of :func:`parse_key_path`, for messages."""
    text = ""
    for segment in key_path:
        text += f"[{segment}]" if isinstance(segment, int) else (f".{segment}" if text else segment)
    return text


@dataclass(frozen=True)
class NewPatchFile:
    """A strategic-merge patch daytwo adds to an overlay (or extends, once it exists)."""

    kustomization: str  # repo path of the kustomization.yaml that must list it
    api_version: str
    kind: str
    name: str  # the workload's name as it enters the overlay (before its prefix/suffix)
    namespace: str | None  # likewise; None when the incoming resource has none


@dataclass(frozen=True)
class SourceOfTruth:
    """Where one container's ``resources`` are declared, or are to be declared.

    ``how`` says which writer applies: ``manifest`` and ``kustomize-patch`` are workload
    (or strategic-merge patch) documents patched by container name; ``helm-values`` and
    ``kustomize-json6902`` hold the resources mapping at ``key_path`` of the document;
    ``kustomize-new-patch`` is a patch file to create (or extend) per ``new_patch``.
    ``base`` is the document that declares the workload itself, which for Kustomize is
    where the JVM options variable may live.
    """

    how: SourceKind
    path: str
    document_index: int
    kind: str
    container: str
    key_path: KeyPath = ()
    base: Location | None = None
    new_patch: NewPatchFile | None = None
    note: str = ""

    def describe(self) -> str:
        """One line for logs and the PR body: what is patched, and why there."""
        where = f"{self.path} (document {self.document_index})"
        if self.key_path:
            where = f"{self.path}#{format_key_path(self.key_path)}"
        text = {
            "manifest": "manifest",
            "kustomize-patch": "Kustomize strategic-merge patch",
            "kustomize-json6902": "Kustomize JSON 6902 patch",
            "kustomize-new-patch": "new Kustomize strategic-merge patch",
            "helm-values": "Helm values",
        }[self.how]
        return f"{text} {where}" + (f" ({self.note})" if self.note else "")


def values_ref_from_annotations(
    annotations: Mapping[str, Any] | None, container: str
) -> ValuesRef | None:
    """The values reference a workload's annotations name for ``container``, if any."""
    if not isinstance(annotations, Mapping):
        return None
    raw = annotations.get(f"{VALUES_PATH_ANNOTATION}.{container}")
    if raw is None:
        raw = annotations.get(VALUES_PATH_ANNOTATION)
    return ValuesRef.parse(str(raw)) if raw is not None else None


def locate_source(
    files: Mapping[str, str],
    workload: WorkloadId | str,
    container: str,
    *,
    values_map: Mapping[str, ValuesRef | Mapping[str, str]] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> SourceOfTruth:
    """Find where ``container`` of ``workload`` gets its resources, among ``files``.

    Pure: ``files`` maps repo-relative POSIX paths to their text (the caller reads
    them, from a checkout or a git ref). Order of precedence: an explicit
    ``values_map`` entry (keyed ``workload id:container`` or ``workload id``, value a
    :class:`ValuesRef` or ``{"file": ..., "path": ...}``), the ``daytwo.io/values-path``
    annotation (passed in from the workload spec, or found on the manifest), then the
    Kustomize trees and plain manifests of the repo. Two candidates raise
    :class:`AmbiguousSourceError` naming both; none raises :class:`SourceNotFoundError`
    naming where it looked.
    """
    workload_id = WorkloadId.parse(workload) if isinstance(workload, str) else workload
    if workload_id.kind not in POD_TEMPLATE_PATHS:
        supported = ", ".join(sorted(POD_TEMPLATE_PATHS))
        raise SinkError(
            f"workload {workload_id} has kind {workload_id.kind!r}; the sink patches only "
            f"{supported}"
        )
    explicit = _mapped_values_ref(values_map, workload_id, container)
    if explicit is None:
        explicit = values_ref_from_annotations(annotations, container)
    if explicit is not None:
        return _values_source(files, explicit, workload_id, container, "configured")
    tree = _KustomizeForest(files)
    candidates = tree.candidates(workload_id) + _plain_candidates(files, tree, workload_id)
    for text, error in tree.hostile:
        # A refused document could be the workload itself (or a copy of it): refuse the
        # whole workload rather than patch another copy or report "not found".
        if not candidates or workload_id.name in text:
            raise error
    if len(candidates) > 1:
        listed = [candidate.label for candidate in candidates]
        raise AmbiguousSourceError(
            f"workload {workload_id} is built {len(candidates)} ways: {'; '.join(listed)}; "
            "point the sink at one directory or map the workload in the sink's values map",
            listed,
        )
    if not candidates:
        raise SourceNotFoundError(_not_found_message(files, tree, workload_id))
    candidate = candidates[0]
    annotated = values_ref_from_annotations(_annotations_of(candidate.document), container)
    if annotated is not None:
        return _values_source(files, annotated, workload_id, container, "annotated")
    if candidate.built is None:
        return SourceOfTruth(
            "manifest", candidate.origin.path, candidate.origin.document_index, workload_id.kind,
            container,
        )  # fmt: skip
    return tree.source_for(candidate.built, workload_id, container)


def _mapped_values_ref(
    values_map: Mapping[str, ValuesRef | Mapping[str, str]] | None,
    workload: WorkloadId,
    container: str,
) -> ValuesRef | None:
    if not values_map:
        return None
    entry = values_map.get(f"{workload}:{container}")
    if entry is None:
        entry = values_map.get(str(workload))
    if entry is None or isinstance(entry, ValuesRef):
        return entry
    file, path = entry.get("file"), entry.get("path")
    if not file or not path:
        raise ConfigError(f"values map entry for {workload} needs both 'file' and 'path'")
    return ValuesRef(str(file).removeprefix("./"), parse_key_path(str(path)))


def _values_source(
    files: Mapping[str, str], ref: ValuesRef, workload: WorkloadId, container: str, why: str
) -> SourceOfTruth:
    text = files.get(ref.file)
    if text is None:
        raise SourceNotFoundError(
            f"{why} values file {ref.file!r} for {workload} container {container!r} is not in the "
            "repository (paths are relative to the repository root)"
        )
    chunks = split_documents(text.removeprefix("\ufeff"))
    if len(chunks) != 1 and sum(1 for chunk in chunks if chunk.body.strip()) != 1:
        raise SinkError(f"values file {ref.file} has several YAML documents; expected one")
    index = next((i for i, chunk in enumerate(chunks) if chunk.body.strip()), 0)
    data = load_guarded(chunks[index].body, ref.file)
    parent = data
    for depth, segment in enumerate(ref.key_path[:-1]):
        parent = _step(parent, segment)
        if parent is None:
            raise SourceNotFoundError(
                f"{why} values path {ref} for {workload}: {ref.file} has no "
                f"{format_key_path(ref.key_path[: depth + 1])!r}"
            )
    if not isinstance(parent, Mapping):
        raise SinkError(f"values path {ref}: the parent of the resources is not a mapping")
    return SourceOfTruth(
        "helm-values", ref.file, index, workload.kind, container, key_path=ref.key_path, note=why
    )


def _step(node: Any, segment: str | int) -> Any:
    if isinstance(segment, int):
        return node[segment] if isinstance(node, list) and segment < len(node) else None
    return node.get(segment) if isinstance(node, Mapping) else None


def _annotations_of(document: Any) -> Mapping[str, Any] | None:
    metadata = document.get("metadata") if isinstance(document, Mapping) else None
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    return annotations if isinstance(annotations, Mapping) else None


# -- Kustomize -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kustomization:
    directory: str
    path: str
    namespace: str | None
    name_prefix: str
    name_suffix: str
    resources: tuple[str, ...]
    data: Mapping[str, Any]


@dataclass(frozen=True)
class _Layer:
    kustomization: _Kustomization
    name: str  # the resource's name as it enters this kustomization
    namespace: str | None


@dataclass(frozen=True)
class _Built:
    origin: Location
    document: Mapping[str, Any]
    kind: str
    name: str
    namespace: str | None
    layers: tuple[_Layer, ...]  # innermost (the one listing the file) first

    @property
    def original_name(self) -> str:
        return str(self.document["metadata"]["name"])


@dataclass(frozen=True)
class _Candidate:
    label: str
    origin: Location
    document: Mapping[str, Any]
    built: _Built | None = None


@dataclass(frozen=True)
class _PatchDocument:
    file: str | None  # None: inline in the kustomization
    document_index: int
    content: Any
    target: Mapping[str, Any] | None
    where: str


def _join(directory: str, relative: str) -> str | None:
    if "://" in relative or relative.startswith(("github.com/", "git@")):
        return None
    joined = posixpath.normpath(posixpath.join(directory, relative))
    if joined.startswith("../") or joined == ".." or posixpath.isabs(joined):
        return None
    return "" if joined == "." else joined


def _string_list(value: Any) -> tuple[str, ...]:
    return tuple(str(item) for item in value) if isinstance(value, list) else ()


class _KustomizeForest:
    """Every kustomization in the repo, what each builds, and which are the roots."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self.files = files
        self.kustomizations: dict[str, _Kustomization] = {}
        self.unreadable: list[str] = []
        self.hostile: list[tuple[str, HostileYamlError]] = []  # (document text, error)
        self.unresolved: list[str] = []
        self.owned_files: set[str] = set()
        for path, text in sorted(files.items()):
            if posixpath.basename(path) in KUSTOMIZATION_FILENAMES:
                self._read_kustomization(path, text)
        referenced: set[str] = set()
        for kustomization in self.kustomizations.values():
            for entry in (*kustomization.resources, *self._patch_files(kustomization)):
                target = _join(kustomization.directory, entry)
                if target is None:
                    continue
                if target in self.kustomizations:
                    referenced.add(target)
                else:
                    self.owned_files.add(target)
        self.roots = sorted(set(self.kustomizations) - referenced)
        self._built: dict[str, list[_Built]] = {}

    def _read_kustomization(self, path: str, text: str) -> None:
        directory = posixpath.dirname(path)
        if directory in self.kustomizations:
            self.unreadable.append(f"{path} (a second kustomization in {directory or '.'})")
            return
        try:
            data = load_guarded(text.removeprefix("\ufeff"), path)
        except SinkError as error:
            self.unreadable.append(f"{path} ({error})")
            return
        if not isinstance(data, Mapping):
            self.unreadable.append(f"{path} (not a mapping)")
            return
        self.kustomizations[directory] = _Kustomization(
            directory=directory,
            path=path,
            namespace=str(data["namespace"]) if data.get("namespace") else None,
            name_prefix=str(data.get("namePrefix") or ""),
            name_suffix=str(data.get("nameSuffix") or ""),
            resources=_string_list(data.get("resources")) + _string_list(data.get("bases")),
            data=data,
        )

    @staticmethod
    def _patch_files(kustomization: _Kustomization) -> list[str]:
        data = kustomization.data
        found = [e for e in _string_list(data.get("patchesStrategicMerge")) if "\n" not in e]
        for key in ("patches", "patchesJson6902"):
            for entry in data.get(key) or ():
                if isinstance(entry, Mapping) and isinstance(entry.get("path"), str):
                    found.append(entry["path"])
        return found

    def in_kustomize_directory(self, path: str) -> bool:
        """Files next to a kustomization belong to it (or to nothing), never plain."""
        return posixpath.dirname(path) in self.kustomizations or path in self.owned_files

    def build(self, directory: str, stack: tuple[str, ...] = ()) -> list[_Built]:
        """What ``directory``'s kustomization emits (workload kinds only), with its layers."""
        if directory in self._built:
            return self._built[directory]
        if directory in stack:
            raise SinkError("Kustomize resources form a cycle: " + " -> ".join((*stack, directory)))
        kustomization = self.kustomizations[directory]
        emitted: list[_Built] = []
        for entry in kustomization.resources:
            target = _join(directory, entry)
            if target is not None and target in self.kustomizations:
                emitted.extend(self.build(target, (*stack, directory)))
            elif target is not None and target in self.files:
                emitted.extend(self._documents(target))
            else:
                self.unresolved.append(f"{kustomization.path}: {entry}")
        result = [
            replace(
                item,
                name=kustomization.name_prefix + item.name + kustomization.name_suffix,
                namespace=kustomization.namespace or item.namespace,
                layers=(*item.layers, _Layer(kustomization, item.name, item.namespace)),
            )
            for item in emitted
        ]
        self._built[directory] = result
        return result

    def _documents(self, path: str) -> Iterator[_Built]:
        for index, chunk in enumerate(split_documents(self.files[path].removeprefix("\ufeff"))):
            if not chunk.body.strip():
                continue
            try:
                document = load_guarded(chunk.body, f"{path} (document {index})")
            except HostileYamlError as error:
                self.hostile.append((chunk.body, error))
                continue
            except SinkError as error:
                self.unreadable.append(str(error))
                continue
            if not isinstance(document, Mapping) or document.get("kind") not in POD_TEMPLATE_PATHS:
                continue
            metadata = document.get("metadata")
            if not isinstance(metadata, Mapping) or not metadata.get("name"):
                continue
            namespace = metadata.get("namespace")
            yield _Built(
                Location(path, index),
                document,
                str(document["kind"]),
                str(metadata["name"]),
                str(namespace) if namespace else None,
                (),
            )

    def candidates(self, workload: WorkloadId) -> list[_Candidate]:
        """One candidate per root kustomization whose build output holds the workload."""
        found: list[_Candidate] = []
        for root in self.roots:
            for item in self.build(root):
                if (item.kind, item.name, item.namespace or "default") == (
                    workload.kind,
                    workload.name,
                    workload.namespace,
                ):
                    label = (
                        f"Kustomize {self.kustomizations[root].path} from {item.origin.path} "
                        f"(document {item.origin.document_index})"
                    )
                    found.append(_Candidate(label, item.origin, item.document, item))
        return found

    # -- which file to patch -------------------------------------------------------------

    def source_for(self, built: _Built, workload: WorkloadId, container: str) -> SourceOfTruth:
        """The outermost patch that sets the container's resources, else a new one.

        Outer kustomizations apply their patches last, so the outermost one that sets
        resources is what the cluster runs. With none, a workload document listed by the
        root itself is patched in place; one that comes from a shared base gets a new
        strategic-merge patch in the root, so other overlays of that base are untouched.
        """
        for layer in reversed(built.layers):
            setters = self._setters(layer, built, container)
            if len(setters) > 1:
                listed = [setter.describe() for setter in setters]
                raise AmbiguousSourceError(
                    f"{layer.kustomization.path} sets the resources of {workload} container "
                    f"{container!r} in {len(setters)} patches: {'; '.join(listed)}",
                    listed,
                )
            if setters:
                return replace(setters[0], base=built.origin)
        root_layer = built.layers[-1]
        if len(built.layers) == 1:
            return SourceOfTruth(
                "manifest",
                built.origin.path,
                built.origin.document_index,
                built.kind,
                container,
                note=f"listed by {root_layer.kustomization.path}",
            )
        kustomization = root_layer.kustomization
        patch_path = posixpath.join(
            kustomization.directory, f"daytwo-{built.kind.lower()}-{root_layer.name}.yaml"
        )
        api_version = str(built.document.get("apiVersion") or "apps/v1")
        return SourceOfTruth(
            "kustomize-new-patch",
            patch_path,
            0,
            built.kind,
            container,
            base=built.origin,
            new_patch=NewPatchFile(
                kustomization.path, api_version, built.kind, root_layer.name, root_layer.namespace
            ),
            note=f"added to {kustomization.path}",
        )

    def _patch_documents(self, kustomization: _Kustomization) -> Iterator[_PatchDocument]:
        data = kustomization.data
        entries: list[tuple[str, Any]] = [
            ("patchesStrategicMerge", {"patch": e} if "\n" in e else {"path": e})
            for e in _string_list(data.get("patchesStrategicMerge"))
        ]
        for key in ("patches", "patchesJson6902"):
            entries.extend((key, e) for e in data.get(key) or () if isinstance(e, Mapping))
        for position, (key, entry) in enumerate(entries):
            target = entry.get("target") if isinstance(entry.get("target"), Mapping) else None
            where = f"{kustomization.path} {key} entry {position}"
            if isinstance(entry.get("path"), str):
                file = _join(kustomization.directory, entry["path"])
                if file is None or file not in self.files:
                    self.unresolved.append(f"{where}: {entry['path']}")
                    continue
                chunks = split_documents(self.files[file].removeprefix("\ufeff"))
                for index, chunk in enumerate(chunks):
                    if chunk.body.strip():
                        content = load_guarded(chunk.body, f"{file} (document {index})")
                        yield _PatchDocument(file, index, content, target, where)
            elif isinstance(entry.get("patch"), str):
                for index, chunk in enumerate(split_documents(entry["patch"])):
                    if chunk.body.strip():
                        content = load_guarded(chunk.body, f"{where} (inline)")
                        yield _PatchDocument(None, index, content, target, where)

    def _setters(self, layer: _Layer, built: _Built, container: str) -> list[SourceOfTruth]:
        setters: list[SourceOfTruth] = []
        for patch in self._patch_documents(layer.kustomization):
            if not _targets(patch, layer, built):
                continue
            if isinstance(patch.content, list):
                key_path = _json6902_resources(patch, built, container)
                how: SourceKind = "kustomize-json6902"
            else:
                key_path = () if _smp_sets_resources(patch.content, built.kind, container) else None
                how = "kustomize-patch"
            if key_path is None:
                continue
            if patch.file is None:
                raise SinkError(
                    f"{patch.where} sets the resources of container {container!r} in an inline "
                    "patch; move it to a file (patches: - path: ...) so it can be patched safely"
                )
            setters.append(
                SourceOfTruth(
                    how, patch.file, patch.document_index, built.kind, container,
                    key_path=key_path, note=f"listed by {layer.kustomization.path}",
                )
            )  # fmt: skip
        return setters


def _matches(pattern: Any, value: str | None) -> bool:
    if pattern is None:
        return True
    if value is None:
        return False
    try:
        return re.fullmatch(str(pattern), value) is not None
    except re.error:
        return str(pattern) == value


def _targets(patch: _PatchDocument, layer: _Layer, built: _Built) -> bool:
    """Whether a patch applies to the resource as it enters ``layer``.

    Kustomize matches a patch by the name the resource has when it enters the
    kustomization, and also by its original name; both are accepted here.
    """
    names = {layer.name, built.original_name}
    if patch.target is not None:
        target = patch.target
        if not (
            target.get("kind") in (None, built.kind)
            and any(_matches(target.get("name"), name) for name in names)
            and _matches(target.get("namespace"), layer.namespace or "default")
        ):
            return False
        if isinstance(patch.content, list):
            return True
    content = patch.content
    metadata = content.get("metadata") if isinstance(content, Mapping) else None
    if not isinstance(metadata, Mapping) or content.get("kind") != built.kind:
        return False
    namespace = metadata.get("namespace")
    return metadata.get("name") in names and (
        namespace is None or namespace in (layer.namespace, layer.kustomization.namespace)
    )


def _containers_of(document: Any, kind: str) -> list[Any]:
    node = document
    for key in (*POD_TEMPLATE_PATHS[kind], "spec"):
        node = node.get(key) if isinstance(node, Mapping) else None
    if not isinstance(node, Mapping):
        return []
    found: list[Any] = []
    for key in ("containers", "initContainers"):
        items = node.get(key)
        if isinstance(items, list):
            found.extend(items)
    return found


def _smp_sets_resources(document: Any, kind: str, container: str) -> bool:
    return any(
        isinstance(item, Mapping) and item.get("name") == container and "resources" in item
        for item in _containers_of(document, kind)
    )


def _json6902_resources(patch: _PatchDocument, built: _Built, container: str) -> KeyPath | None:
    """The key path of the op's ``value`` that replaces the container's resources, if any."""
    prefix = "/" + "/".join((*POD_TEMPLATE_PATHS[built.kind], "spec"))
    template: Any = built.document
    for key in (*POD_TEMPLATE_PATHS[built.kind], "spec"):
        template = template.get(key) if isinstance(template, Mapping) else None
    found: KeyPath | None = None
    for position, op in enumerate(patch.content):
        if not isinstance(op, Mapping) or not isinstance(op.get("path"), str):
            continue
        pointer = op["path"].replace("~1", "/").replace("~0", "~")
        match = re.fullmatch(
            re.escape(prefix) + r"/(containers|initContainers)/(\d+)/resources(/.*)?", pointer
        )
        if match is None or op.get("op") not in ("add", "replace"):
            continue
        items = template.get(match[1]) if isinstance(template, Mapping) else None
        index = int(match[2])
        if not isinstance(items, list) or index >= len(items):
            continue
        if not isinstance(items[index], Mapping) or items[index].get("name") != container:
            continue
        if match[3]:
            raise SinkError(
                f"{patch.file} op {position} sets {pointer} alone; daytwo patches a JSON 6902 "
                "op only when it sets the whole resources mapping: edit this one by hand"
            )
        found = (position, "value")
    return found


def _plain_candidates(
    files: Mapping[str, str], forest: _KustomizeForest, workload: WorkloadId
) -> list[_Candidate]:
    candidates: list[_Candidate] = []
    for path, text in sorted(files.items()):
        if forest.in_kustomize_directory(path) or workload.name not in text:
            continue
        for index, chunk in enumerate(split_documents(text.removeprefix("\ufeff"))):
            try:
                document = load_guarded(chunk.body, f"{path} (document {index})")
            except HostileYamlError as error:
                forest.hostile.append((chunk.body, error))
                continue
            except SinkError as error:
                forest.unreadable.append(str(error))
                continue
            if declares_workload(document, workload):
                candidates.append(
                    _Candidate(f"{path} (document {index})", Location(path, index), document)
                )
    return candidates


def _not_found_message(
    files: Mapping[str, str], forest: _KustomizeForest, workload: WorkloadId
) -> str:
    message = (
        f"no {workload.kind} named {workload.name!r} in namespace {workload.namespace!r}: "
        f"searched {len(files)} YAML file(s)"
    )
    if forest.roots:
        roots = ", ".join(forest.kustomizations[root].path for root in forest.roots)
        message += f" and the output of {len(forest.roots)} Kustomize root(s) ({roots})"
    message += (
        f"; no values map entry and no {VALUES_PATH_ANNOTATION} annotation for it"
        " (a Helm chart needs one of them)"
    )
    if forest.unresolved:
        message += "; unresolved Kustomize references: " + ", ".join(forest.unresolved)
    if forest.unreadable:
        message += "; skipped as not valid or not safe YAML: " + ", ".join(forest.unreadable)
    return message
