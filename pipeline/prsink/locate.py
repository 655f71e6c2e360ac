"""Find the YAML document that declares a workload in a GitOps repository.

The sink must change exactly one document: the one Kubernetes would apply for the
workload the recommendation is about. Matching is deliberately strict (kind, name and
namespace all equal) and ambiguity is reported, never guessed, because a PR against the
wrong copy of a manifest is worse than no PR.

Limitations kept on purpose for now: a document without ``metadata.namespace`` is
taken to be in ``default`` (a ``namespace:`` set by a ``kustomization.yaml`` is not
honoured yet), and Helm templates, which are not YAML until rendered, are skipped.

Document indexes count the chunks produced by :func:`split_documents`, which both this
module and :mod:`pipeline.prsink.patch` use, so an index found here always names the
same bytes there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from pipeline.errors import SinkError

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
