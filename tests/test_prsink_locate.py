"""locate: find exactly one document per workload in a tree of plain manifests."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import SinkError
from pipeline.prsink.locate import (
    Location,
    WorkloadId,
    find_workload_document,
    is_manifest_path,
    locate_workload,
    split_documents,
)


def deployment(name: str, namespace: str | None = "shop", kind: str = "Deployment") -> str:
    namespace_line = f"  namespace: {namespace}\n" if namespace else ""
    return (
        f"apiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: {name}\n{namespace_line}"
        "spec:\n  template:\n    spec:\n      containers:\n      - name: app\n        image: x\n"
    )


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    write(tmp_path, "README.md", "checkout lives in apps/\n")
    write(tmp_path, "apps/shop/service.yaml", "kind: Service\nmetadata:\n  name: checkout\n")
    write(
        tmp_path,
        "apps/shop/workloads.yml",
        "# shop workloads\n"
        + deployment("cart")
        + "---\n"
        + deployment("checkout")
        + "---\n"
        + deployment("checkout", kind="StatefulSet"),
    )
    write(tmp_path, "apps/default/web.yaml", deployment("web", namespace=None))
    # Copies that must never be found: git's data and daytwo's own notes.
    write(tmp_path, ".git/checkout.yaml", deployment("checkout"))
    write(tmp_path, ".daytwo/checkout.yaml", deployment("checkout"))
    write(tmp_path, "charts/shop/templates/deploy.yaml", "name: checkout\n{{- if .Values.x }}\n")
    return tmp_path


def test_finds_the_document_by_kind_name_and_namespace(repo: Path) -> None:
    assert locate_workload(repo, "prod/shop/Deployment/checkout") == Location(
        "apps/shop/workloads.yml", 1
    )
    assert locate_workload(repo, "prod/shop/StatefulSet/checkout") == Location(
        "apps/shop/workloads.yml", 2
    )
    assert locate_workload(repo, WorkloadId("prod", "shop", "Deployment", "cart")) == Location(
        "apps/shop/workloads.yml", 0
    )


def test_document_without_namespace_is_in_default(repo: Path) -> None:
    assert locate_workload(repo, "c/default/Deployment/web") == Location("apps/default/web.yaml", 0)
    with pytest.raises(SinkError, match="namespace 'other'"):
        locate_workload(repo, "c/other/Deployment/web")


def test_not_found_names_what_was_searched_and_what_was_skipped(repo: Path) -> None:
    with pytest.raises(SinkError) as raised:
        locate_workload(repo, "prod/shop/DaemonSet/checkout")
    message = str(raised.value)
    assert "no DaemonSet named 'checkout' in namespace 'shop'" in message
    assert "among 4 YAML file(s)" in message
    assert "charts/shop/templates/deploy.yaml" in message


def test_two_candidates_are_reported_not_guessed(repo: Path) -> None:
    write(repo, "overlays/prod/checkout.yaml", deployment("checkout"))
    with pytest.raises(SinkError, match="declared 2 times") as raised:
        locate_workload(repo, "prod/shop/Deployment/checkout")
    assert "apps/shop/workloads.yml (document 1)" in str(raised.value)
    assert "overlays/prod/checkout.yaml (document 0)" in str(raised.value)


def test_cronjob_and_job_are_supported_other_kinds_are_refused() -> None:
    files = [
        (
            "jobs.yaml",
            deployment("nightly", kind="CronJob") + "---\n" + deployment("once", kind="Job"),
        )
    ]
    assert find_workload_document(files, WorkloadId.parse("c/shop/CronJob/nightly")) == Location(
        "jobs.yaml", 0
    )
    assert find_workload_document(files, WorkloadId.parse("c/shop/Job/once")) == Location(
        "jobs.yaml", 1
    )
    with pytest.raises(SinkError, match="kind 'Process'"):
        find_workload_document(files, WorkloadId.parse("c/shop/Process/once"))


@pytest.mark.parametrize("bad", ["shop/checkout", "a/b/c/d/e", "a//Deployment/x", ""])
def test_malformed_workload_ids_are_errors(bad: str) -> None:
    with pytest.raises(SinkError, match="not of the form"):
        WorkloadId.parse(bad)


def test_manifest_paths_skip_git_and_daytwo() -> None:
    assert is_manifest_path("apps/a.yaml")
    assert is_manifest_path("b.yml")
    assert not is_manifest_path(".daytwo/PR.md")
    assert not is_manifest_path(".daytwo/x.yaml")
    assert not is_manifest_path("a/.git/x.yaml")
    assert not is_manifest_path("a/values.json")


def test_document_markers_inside_scalars_are_not_split() -> None:
    text = "a: |\n  ---\n  text\nb: '--- not a marker'\n---\nc: 1\n...\n---  # next\nd: 2\n"
    chunks = split_documents(text)
    assert [chunk.body for chunk in chunks] == [
        "a: |\n  ---\n  text\nb: '--- not a marker'\n",
        "c: 1\n",
        "",
        "d: 2\n",
    ]
    assert chunks[3].prefix == "---  # next\n"


lines = st.sampled_from(
    ["---", "--- # c", "...", "a: 1", "  - x", "---x: 1", "b: '---'", "", "# c", "--- {a: 1}"]
)


@given(st.lists(lines, max_size=20), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_splitting_keeps_every_byte(parts: list[str], newline: str, final: bool) -> None:
    text = newline.join(parts) + (newline if final else "")
    chunks = split_documents(text)
    assert "".join(chunk.prefix + chunk.body for chunk in chunks) == text
    markers = sum(1 for part in parts if part.startswith(("--- ", "...")) or part == "---")
    assert len(chunks) == markers + 1
