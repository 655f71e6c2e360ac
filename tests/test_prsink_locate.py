"""locate: find exactly one document per workload in a tree of plain manifests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ConfigError, SinkError
from pipeline.prsink.locate import (
    MAX_ALIASES,
    VALUES_PATH_ANNOTATION,
    AmbiguousSourceError,
    HostileYamlError,
    Location,
    NewPatchFile,
    SourceNotFoundError,
    ValuesRef,
    WorkloadId,
    find_workload_document,
    format_key_path,
    guard_document,
    is_manifest_path,
    locate_source,
    locate_workload,
    parse_key_path,
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


# -- sources of truth: Kustomize, Helm values, ambiguity ---------------------------------

CORPUS = Path(__file__).parent / "fixtures" / "gitops"


def layout(name: str) -> dict[str, str]:
    root = CORPUS / name
    return {
        path.relative_to(root).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(root.rglob("*.yaml"))
    }


def test_kustomize_overlays_are_told_apart_by_namespace_and_name() -> None:
    files = layout("kustomize")
    prod = locate_source(files, "prod/shop-prod/Deployment/checkout", "app")
    assert (prod.how, prod.path) == ("kustomize-patch", "overlays/prod/resources.yaml")
    assert prod.base == Location("base/deployment.yaml", 0)
    staging = locate_source(files, "c/shop-staging/Deployment/checkout-stg", "app")
    assert staging.how == "kustomize-new-patch"
    assert staging.path == "overlays/staging/daytwo-deployment-checkout.yaml"
    assert staging.new_patch == NewPatchFile(
        "overlays/staging/kustomization.yaml", "apps/v1", "Deployment", "checkout", None
    )
    canary = locate_source(files, "c/shop-canary/Deployment/canary-checkout", "app")
    assert (canary.how, canary.key_path) == ("kustomize-json6902", (1, "value"))
    # The base alone is never applied: it is not a root, so it is not a candidate.
    with pytest.raises(SourceNotFoundError, match="3 Kustomize root") as raised:
        locate_source(files, "c/default/Deployment/checkout", "app")
    assert "overlays/canary/kustomization.yaml" in str(raised.value)


def test_a_container_without_an_overlay_patch_gets_a_new_one() -> None:
    source = locate_source(layout("kustomize"), "prod/shop-prod/Deployment/checkout", "log-shipper")
    assert source.how == "kustomize-new-patch"
    assert source.new_patch is not None
    assert source.new_patch.kustomization == "overlays/prod/kustomization.yaml"


def test_two_overlays_building_the_same_workload_are_ambiguous() -> None:
    files = layout("kustomize")
    files["overlays/prod-eu/kustomization.yaml"] = files["overlays/prod/kustomization.yaml"]
    files["overlays/prod-eu/resources.yaml"] = files["overlays/prod/resources.yaml"]
    files["overlays/prod-eu/replicas.yaml"] = files["overlays/prod/replicas.yaml"]
    with pytest.raises(AmbiguousSourceError) as raised:
        locate_source(files, "prod/shop-prod/Deployment/checkout", "app")
    assert len(raised.value.candidates) == 2
    listed = " ".join(raised.value.candidates)
    assert "overlays/prod-eu/kustomization.yaml" in listed
    assert "overlays/prod/kustomization.yaml" in listed


def test_a_plain_copy_next_to_a_kustomize_build_is_ambiguous() -> None:
    files = layout("kustomize")
    files["legacy/checkout.yaml"] = files["base/deployment.yaml"].replace(
        "  name: checkout\n", "  name: checkout\n  namespace: shop-prod\n", 1
    )
    with pytest.raises(AmbiguousSourceError, match="built 2 ways") as raised:
        locate_source(files, "prod/shop-prod/Deployment/checkout", "app")
    assert "legacy/checkout.yaml (document 0)" in raised.value.candidates


def test_two_patches_setting_resources_in_one_overlay_are_ambiguous() -> None:
    files = layout("kustomize")
    files["overlays/prod/more.yaml"] = files["overlays/prod/resources.yaml"]
    files["overlays/prod/kustomization.yaml"] += "  - path: more.yaml\n"
    with pytest.raises(AmbiguousSourceError, match="in 2 patches") as raised:
        locate_source(files, "prod/shop-prod/Deployment/checkout", "app")
    assert any("more.yaml" in candidate for candidate in raised.value.candidates)


def test_inline_and_single_field_patches_are_refused_with_a_reason() -> None:
    files = layout("kustomize")
    inline = files["overlays/prod/resources.yaml"].replace("\n", "\n      ")
    files["overlays/prod/kustomization.yaml"] = files["overlays/prod/kustomization.yaml"].replace(
        "  - path: resources.yaml   # sizing lives here, not in the base\n",
        f"  - patch: |-\n      {inline.rstrip()}\n",
    )
    with pytest.raises(SinkError, match="inline patch"):
        locate_source(files, "prod/shop-prod/Deployment/checkout", "app")
    files = layout("kustomize")
    files["overlays/canary/resources-6902.yaml"] = (
        "- op: replace\n  path: /spec/template/spec/containers/0/resources/limits/memory\n"
        "  value: 1Gi\n"
    )
    with pytest.raises(SinkError, match="alone"):
        locate_source(files, "c/shop-canary/Deployment/canary-checkout", "app")


def test_kustomize_cycles_are_reported() -> None:
    files = {
        "a/kustomization.yaml": "resources: [../b]\n",
        "b/kustomization.yaml": "resources: [../a]\n",
        "c/kustomization.yaml": "resources: [../a]\n",
    }
    with pytest.raises(SinkError, match="cycle"):
        locate_source(files, "c/default/Deployment/x", "app")


def test_helm_values_from_config_annotation_or_manifest() -> None:
    files = layout("helm")
    values = "envs/prod/values-checkout.yaml"
    by_workload: dict[str, ValuesRef | Mapping[str, str]] = {
        "prod/shop/Deployment/checkout": {"file": values, "path": "checkout.app.resources"}
    }
    by_container: dict[str, ValuesRef | Mapping[str, str]] = {
        **by_workload,
        "prod/shop/Deployment/checkout:worker": ValuesRef(
            values, ("checkout", "worker", "resources")
        ),
    }
    assert locate_source(
        files, "prod/shop/Deployment/checkout", "worker", values_map=by_container
    ).key_path == ("checkout", "worker", "resources")
    assert locate_source(
        files, "prod/shop/Deployment/checkout", "app", values_map=by_container
    ).key_path == ("checkout", "app", "resources")
    annotations = {"daytwo.io/values-path.worker": f"{values}#checkout.worker.resources"}
    source = locate_source(files, "p/shop/Deployment/checkout", "worker", annotations=annotations)
    assert (source.how, source.path, source.note) == ("helm-values", values, "configured")
    # The annotation on a manifest in the repo counts too.
    files["rendered/checkout.yaml"] = deployment("checkout").replace(
        "  namespace: shop\n",
        "  namespace: shop\n  annotations:\n"
        f"    daytwo.io/values-path: {values}#checkout.app.resources\n",
    )
    found = locate_source(files, "p/shop/Deployment/checkout", "app")
    assert (found.how, found.key_path, found.note) == (
        "helm-values",
        ("checkout", "app", "resources"),
        "annotated",
    )


def test_values_references_that_do_not_resolve_say_so() -> None:
    files = layout("helm")
    with pytest.raises(SourceNotFoundError, match=r"'missing\.yaml' .* not in the repository"):
        locate_source(
            files,
            "p/shop/Deployment/checkout",
            "app",
            annotations={VALUES_PATH_ANNOTATION: "missing.yaml#a"},
        )
    with pytest.raises(SourceNotFoundError, match=r"has no 'checkout\.api'"):
        locate_source(
            files,
            "p/shop/Deployment/checkout",
            "app",
            values_map={
                "p/shop/Deployment/checkout": {
                    "file": "envs/prod/values-checkout.yaml",
                    "path": "checkout.api.resources",
                }
            },
        )
    with pytest.raises(SourceNotFoundError, match="values-path annotation"):
        locate_source(files, "p/shop/Deployment/checkout", "app")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a.b.resources", ("a", "b", "resources")),
        ("apps[1].resources", ("apps", 1, "resources")),
        ("[0].value", (0, "value")),
    ],
)
def test_key_paths_round_trip(text: str, expected: tuple[str | int, ...]) -> None:
    assert parse_key_path(text) == expected
    assert format_key_path(expected) == text


@pytest.mark.parametrize("bad", ["", "a..b", "a.[x]", "values.yaml", "#a.b"])
def test_malformed_values_references_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        ValuesRef.parse(bad) if "." in bad or not bad else parse_key_path(bad)


def test_alias_bombs_are_refused_before_expansion() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 7)}]" for i in range(1, 9)]
    with pytest.raises(HostileYamlError, match=r"bomb.yaml: aliases expand to \d+ nodes"):
        guard_document("\n".join(levels) + "\n", "bomb.yaml")
    many = "x: &x 1\n" + "".join(f"y{i}: *x\n" for i in range(MAX_ALIASES + 1))
    with pytest.raises(HostileYamlError, match="65 YAML aliases"):
        guard_document(many, "many.yaml")
    recursive = "a: &a [*a]\n"
    with pytest.raises(HostileYamlError, match="its own ancestor"):
        guard_document(recursive, "recursive.yaml")
