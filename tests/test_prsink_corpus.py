"""Golden patches over a corpus of realistic GitOps layouts (issue 5, acceptance 1).

Each layout under ``tests/fixtures/gitops/<layout>/`` is a repository root: plain
manifests, a multi-document file, a StatefulSet with anchors, a CronJob, an Argo
Rollout, a Kustomize base with three overlays, and a Helm values file. For each
scenario the unified diff of every file :func:`patch_workload` writes must equal the
reviewed diff stored in ``tests/fixtures/gitops/expected/<scenario>.diff``; hunk headers
pin the exact changed line numbers.

Independently of the goldens, every changed line of an existing file must lie in a
region computed here from ruamel's composed nodes (the container's ``resources`` block,
its ``env`` block when the JVM options change, or the end of a kustomization's patch
list), and a hypothesis property checks, for random values, that patching then parsing
gives the intended values and every other line is byte for byte the same.

Regenerate the goldens after a deliberate change with
``.venv/bin/python -m tests.test_prsink_corpus`` and review the diff in git.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.core.quantity import parse_cpu, parse_memory
from pipeline.errors import SinkError
from pipeline.prsink.locate import (
    POD_TEMPLATE_PATHS,
    HostileYamlError,
    KeyPath,
    SourceOfTruth,
    split_documents,
)
from pipeline.prsink.patch import ContainerChange, WorkloadPatch, patch_workload

CORPUS = Path(__file__).parent / "fixtures" / "gitops"
EXPECTED = CORPUS / "expected"
MI = 1024**2

FULL = {
    "cpu_request_cores": 0.3473,
    "cpu_limit_cores": 1.5,
    "memory_request_bytes": 1536 * MI,
    "memory_limit_bytes": 1536 * MI,
}
SMALL = {
    "cpu_request_cores": 0.05,
    "cpu_limit_cores": None,
    "memory_request_bytes": 64 * MI,
    "memory_limit_bytes": 64 * MI,
}
HELM_VALUES = "envs/prod/values-checkout.yaml"


@dataclass(frozen=True)
class Scenario:
    name: str
    layout: str
    workload: str
    changes: tuple[ContainerChange, ...]
    values_map: Mapping[str, Any] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


SCENARIOS = (
    Scenario("plain-web", "plain", "prod/web/Deployment/web", (ContainerChange("web", FULL),)),
    Scenario(
        "multidoc-checkout-jvm",
        "multidoc",
        "prod/shop/Deployment/checkout",
        (ContainerChange("app", FULL, "-Xmx1152m", ("-Xms1152m", "-Xmx1152m")),),
    ),
    Scenario(
        "statefulset-ledger-anchors",
        "statefulset",
        "prod/payments/StatefulSet/ledger",
        (ContainerChange("postgres", FULL),),
    ),
    Scenario(
        "cronjob-report-jvm",
        "cronjob",
        "prod/jobs/CronJob/nightly-report",
        (
            ContainerChange(
                "report",
                FULL,
                "-XX:MaxRAMPercentage=60 -XX:+ExitOnOutOfMemoryError",
                ("-XX:MaxRAMPercentage=60",),
            ),
        ),
    ),
    Scenario(
        "rollout-storefront",
        "rollout",
        "prod/storefront/Rollout/storefront",
        (ContainerChange("storefront", FULL),),
    ),
    Scenario(
        "kustomize-prod-existing-patch",
        "kustomize",
        "prod/shop-prod/Deployment/checkout",
        (
            ContainerChange("app", FULL, "-Xmx1g -XX:+UseG1GC", ("-Xmx1g",)),
            ContainerChange("log-shipper", SMALL),
        ),
    ),
    Scenario(
        "kustomize-staging-new-patch",
        "kustomize",
        "staging/shop-staging/Deployment/checkout-stg",
        (ContainerChange("app", FULL),),
    ),
    Scenario(
        "kustomize-canary-json6902",
        "kustomize",
        "canary/shop-canary/Deployment/canary-checkout",
        (ContainerChange("app", FULL),),
    ),
    Scenario(
        "helm-values-nested",
        "helm",
        "prod/shop/Deployment/checkout",
        (ContainerChange("app", FULL), ContainerChange("worker", SMALL)),
        values_map={
            "prod/shop/Deployment/checkout:worker": {
                "file": HELM_VALUES,
                "path": "checkout.worker.resources",
            }
        },
        annotations={"daytwo.io/values-path": f"{HELM_VALUES}#checkout.app.resources"},
    ),
)


def read_layout(layout: str) -> dict[str, str]:
    root = CORPUS / layout
    return {
        path.relative_to(root).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix in (".yaml", ".yml")
    }


def run(scenario: Scenario, files: Mapping[str, str] | None = None) -> WorkloadPatch:
    return patch_workload(
        read_layout(scenario.layout) if files is None else files,
        scenario.workload,
        scenario.changes,
        values_map=scenario.values_map,
        annotations=scenario.annotations,
    )


def unified_diff(before: Mapping[str, str], after: Mapping[str, str]) -> str:
    lines: list[str] = []
    for path in sorted(after):
        old = before.get(path)
        lines.extend(
            difflib.unified_diff(
                (old or "").splitlines(keepends=True),
                after[path].splitlines(keepends=True),
                "/dev/null" if old is None else f"a/{path}",
                f"b/{path}",
                n=1,
            )
        )
    return "".join(lines)


# -- regions a patch may touch, computed from composed nodes --------------------------------


def _compose(text: str) -> Node:
    node = YAML(typ="safe", pure=True).compose(text)
    assert isinstance(node, Node)
    return node


def _get(node: Node, segment: str | int) -> Node | None:
    if isinstance(segment, int):
        assert isinstance(node, SequenceNode)
        item: Node | None = node.value[segment] if segment < len(node.value) else None
        return item
    assert isinstance(node, MappingNode)
    for key, value in node.value:
        if isinstance(key, ScalarNode) and key.value == segment:
            found: Node = value
            return found
    return None


def _last_line(node: Node) -> int:
    if isinstance(node, MappingNode) and node.value and not node.flow_style:
        return _last_line(node.value[-1][1])
    if isinstance(node, SequenceNode) and node.value and not node.flow_style:
        return _last_line(node.value[-1])
    if isinstance(node, ScalarNode) and node.style in ("|", ">"):
        return int(node.end_mark.line) - 1
    return int(node.end_mark.line)


def _entry_lines(holder: Node, key: str) -> set[int]:
    """Lines of ``key: value`` in a block mapping (from the key to the value's end)."""
    assert isinstance(holder, MappingNode)
    for key_node, value in holder.value:
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            first = int(key_node.start_mark.line)
            return set(range(first, max(first, _last_line(value)) + 1))
    return set()


def _container_node(root: Node, kind: str, container: str) -> Node | None:
    spec: Node | None = root
    for segment in (*POD_TEMPLATE_PATHS[kind], "spec"):
        spec = _get(spec, segment) if spec is not None else None
    for list_key in ("containers", "initContainers"):
        items = _get(spec, list_key) if isinstance(spec, MappingNode) else None
        for item in items.value if isinstance(items, SequenceNode) else ():
            name = _get(item, "name")
            if isinstance(name, ScalarNode) and name.value == container:
                container_node: Node = item
                return container_node
    return None


def allowed_lines(text: str, source: SourceOfTruth, jvm: bool) -> set[int]:
    """0-based line numbers of ``text`` (the whole file) the source may change."""
    chunks = split_documents(text)
    offset = sum((c.prefix + c.body).count("\n") for c in chunks[: source.document_index])
    offset += chunks[source.document_index].prefix.count("\n")
    root = _compose(chunks[source.document_index].body)
    lines: set[int] = set()
    if source.key_path:
        holder: Node | None = root
        for segment in source.key_path[:-1]:
            holder = _get(holder, segment) if holder is not None else None
        assert holder is not None
        lines = _entry_lines(holder, str(source.key_path[-1]))
    else:
        item = _container_node(root, source.kind, source.container)
        if item is not None:
            lines = _entry_lines(item, "resources")
            if jvm:
                lines |= _entry_lines(item, "env")
    return {offset + line for line in lines}


def changed_lines(before: str, after: str) -> tuple[set[int], set[int]]:
    """Old and new 0-based line numbers that differ, by difflib over whole lines."""
    matcher = difflib.SequenceMatcher(
        a=before.splitlines(keepends=True), b=after.splitlines(keepends=True), autojunk=False
    )
    old: set[int] = set()
    new: set[int] = set()
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag != "equal":
            old.update(range(a0, a1))
            new.update(range(b0, b1))
    return old, new


def assert_confined(scenario: Scenario, before: Mapping[str, str], result: WorkloadPatch) -> None:
    """Every changed line of an existing file is in a region the sources may touch."""
    jvm = {change.container: bool(change.jvm_changed) for change in scenario.changes}
    kustomizations = {
        source.new_patch.kustomization
        for source in result.sources.values()
        if source.new_patch is not None
    }
    for path, after in result.files.items():
        old_text = before.get(path)
        if old_text is None:
            assert path.rsplit("/", 1)[-1].startswith("daytwo-"), path
            continue
        old_changed, new_changed = changed_lines(old_text, after)
        if path in kustomizations:
            assert not old_changed, (path, old_changed)  # a patch is only listed, never moved
            continue
        allowed_old: set[int] = set()
        allowed_new: set[int] = set()
        for source in result.sources.values():
            if source.path == path:
                allowed_old |= allowed_lines(old_text, source, jvm[source.container])
                allowed_new |= allowed_lines(after, source, jvm[source.container])
        assert old_changed <= allowed_old, (path, sorted(old_changed - allowed_old))
        assert new_changed <= allowed_new, (path, sorted(new_changed - allowed_new))
    untouched = set(before) - set(result.files)
    for path in untouched:
        assert before[path] == read_layout(scenario.layout)[path]


# -- reading the written values back -----------------------------------------------------


def _data_at(text: str, index: int, path: KeyPath) -> Any:
    node: Any = YAML(typ="safe", pure=True).load(split_documents(text)[index].body)
    for segment in path:
        node = node[segment]
    return node


def _container_data(text: str, index: int, kind: str, container: str) -> dict[str, Any]:
    spec = _data_at(text, index, (*POD_TEMPLATE_PATHS[kind], "spec"))
    for item in [*(spec.get("containers") or ()), *(spec.get("initContainers") or ())]:
        if item["name"] == container:
            found: dict[str, Any] = item
            return found
    raise AssertionError(container)


def written_resources(files: Mapping[str, str], source: SourceOfTruth) -> Mapping[str, Any]:
    text = files[source.path]
    if source.key_path:
        resources: Mapping[str, Any] = _data_at(text, source.document_index, source.key_path)
        return resources
    container = _container_data(text, source.document_index, source.kind, source.container)
    return container.get("resources") or {}


def assert_values(resources: Mapping[str, Any], recommended: Mapping[str, Any]) -> None:
    fields = (
        ("requests", "cpu", "cpu_request_cores"),
        ("requests", "memory", "memory_request_bytes"),
        ("limits", "cpu", "cpu_limit_cores"),
        ("limits", "memory", "memory_limit_bytes"),
    )
    for section, key, name in fields:
        wanted = recommended.get(name)
        if wanted is None:
            continue
        actual = resources[section][key]
        if key == "cpu":
            cores = parse_cpu(str(actual))
            # Written in whole millicores, rounded up: never below the recommendation.
            assert wanted - 1e-9 <= cores < wanted + 0.001 + 1e-9, (actual, wanted)
            assert math.isclose(cores * 1000, round(cores * 1000), abs_tol=1e-6)
        else:
            assert parse_memory(str(actual)) == wanted, (actual, wanted)


def jvm_value(files: Mapping[str, str], source: SourceOfTruth, variable: str) -> str:
    """The JVM options the workload ends up with: the source's entry, else the base's."""
    places = [(source.path, source.document_index)]
    if source.base is not None:
        places.append((source.base.path, source.base.document_index))
    for path, index in places:
        container = _container_data(files[path], index, source.kind, source.container)
        for entry in container.get("env") or ():
            if entry["name"] == variable:
                return str(entry["value"])
    raise AssertionError(variable)


# -- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_golden_diff(scenario: Scenario) -> None:
    before = read_layout(scenario.layout)
    result = run(scenario)
    expected = (EXPECTED / f"{scenario.name}.diff").read_text(encoding="utf-8")
    assert unified_diff(before, result.files) == expected
    assert_confined(scenario, before, result)
    merged = {**before, **result.files}
    for change in scenario.changes:
        assert_values(
            written_resources(merged, result.sources[change.container]), change.recommended
        )
    # Applying the same change to the patched tree changes nothing.
    assert run(scenario, merged).files == {}


def test_sources_are_the_expected_kinds() -> None:
    kinds = {
        scenario.name: sorted({(c, s.how) for c, s in run(scenario).sources.items()})
        for scenario in SCENARIOS
    }
    assert kinds["kustomize-prod-existing-patch"] == [
        ("app", "kustomize-patch"),
        ("log-shipper", "kustomize-new-patch"),
    ]
    assert kinds["kustomize-staging-new-patch"] == [("app", "kustomize-new-patch")]
    assert kinds["kustomize-canary-json6902"] == [("app", "kustomize-json6902")]
    assert kinds["helm-values-nested"] == [("app", "helm-values"), ("worker", "helm-values")]
    assert kinds["rollout-storefront"] == [("storefront", "manifest")]


def test_jvm_options_go_into_the_variable_the_container_uses() -> None:
    by_name = {scenario.name: scenario for scenario in SCENARIOS}
    multidoc = run(by_name["multidoc-checkout-jvm"])
    assert multidoc.jvm_variables == {"app": "JAVA_OPTS"}
    kustomize = run(by_name["kustomize-prod-existing-patch"])
    # The base declares JAVA_TOOL_OPTIONS; the overlay's patch overrides it by name.
    assert kustomize.jvm_variables == {"app": "JAVA_TOOL_OPTIONS"}
    assert "overlays/prod/resources.yaml" in kustomize.files
    assert "base/deployment.yaml" not in kustomize.files
    plain = replace(
        by_name["plain-web"], changes=(ContainerChange("web", FULL, "-Xmx1g", ("-Xmx1g",)),)
    )
    result = run(plain)
    assert result.jvm_variables == {}
    assert len(result.notes) == 1
    assert "JAVA_TOOL_OPTIONS" in result.notes[0]


def test_shared_anchor_is_refused_naming_the_file() -> None:
    scenario = replace(SCENARIOS[2], changes=(ContainerChange("backup", FULL),))
    with pytest.raises(SinkError, match=r"payments/ledger\.yaml.*anchor|anchor") as raised:
        run(scenario)
    assert "used elsewhere" in str(raised.value)


@pytest.mark.parametrize(
    ("replacement", "message"),
    [
        ("replicas: !!python/object/apply:os.system ['true']", "Python-specific tag"),
        (
            "replicas: 6\n  bomb0: &b0 [x, x, x, x, x, x]\n"
            + "".join(f"  bomb{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 6)}]\n" for i in range(1, 9)),
            "alias bomb",
        ),
        ("replicas: 6\n  replicas: 7", "duplicate key"),
    ],
)
def test_hostile_yaml_is_refused_naming_the_file(replacement: str, message: str) -> None:
    files = read_layout("plain")
    path = "apps/web/deployment.yaml"
    files[path] = files[path].replace("replicas: 6", replacement)
    with pytest.raises(SinkError, match=message) as raised:
        run(SCENARIOS[0], files)
    assert path in str(raised.value)
    assert isinstance(raised.value, HostileYamlError)


# -- the property ------------------------------------------------------------------------

cores = st.none() | st.floats(min_value=0.001, max_value=64, allow_nan=False)
memory = (
    st.none()
    | st.integers(min_value=1, max_value=64 * 1024).map(lambda m: m * MI)
    | st.integers(min_value=1, max_value=2**40)
)
heap_mib = st.none() | st.integers(min_value=64, max_value=32 * 1024)


def _recommended(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "cpu_request_cores": draw(cores),
        "cpu_limit_cores": draw(cores),
        "memory_request_bytes": draw(memory),
        "memory_limit_bytes": draw(memory),
    }


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    scenario = draw(st.sampled_from(SCENARIOS))
    changes: list[ContainerChange] = []
    for change in scenario.changes:
        heap = draw(heap_mib) if change.jvm_changed else None
        option = f"-Xmx{heap}m" if heap else None
        changes.append(
            ContainerChange(
                change.container, _recommended(draw), option, (option,) if option else ()
            )
        )
    return replace(scenario, changes=tuple(changes))


@settings(max_examples=80, deadline=None)
@given(scenario=scenarios())
def test_patch_then_parse_gives_the_values_and_nothing_else_moves(scenario: Scenario) -> None:
    before = read_layout(scenario.layout)
    result = run(scenario)
    assert_confined(scenario, before, result)
    merged = {**before, **result.files}
    for change in scenario.changes:
        source = result.sources[change.container]
        if any(value is not None for value in change.recommended.values()):
            assert_values(written_resources(merged, source), change.recommended)
        variable = result.jvm_variables.get(change.container)
        if change.jvm_changed and variable is not None:
            options = jvm_value(merged, source, variable).split()
            heaps = [option for option in options if option.startswith("-Xmx")]
            assert heaps == [change.jvm_changed[0]]
    assert run(scenario, merged).files == {}


if __name__ == "__main__":  # regenerate the goldens (review the result in git)
    for scenario in SCENARIOS:
        diff = unified_diff(read_layout(scenario.layout), run(scenario).files)
        (EXPECTED / f"{scenario.name}.diff").write_text(diff, encoding="utf-8")
