"""patch_resources: the intended quantities change, and no byte outside `resources` does.

The central check (`assert_confined`) diffs input and output with difflib and requires
every removed line to lie in the container's `resources` block of the input and every
added line in that block of the output; the block extents are computed here from
ruamel's composed nodes, independently of the patcher.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.core.quantity import parse_cpu, parse_memory
from pipeline.errors import SinkError
from pipeline.prsink.locate import POD_TEMPLATE_PATHS, split_documents
from pipeline.prsink.patch import (
    ContainerChange,
    EnvVarMissingError,
    add_container_entry,
    add_env_entry,
    jvm_option_key,
    list_patch_in_kustomization,
    merge_jvm_options,
    patch_env_value,
    patch_resources,
    patch_resources_at,
    patch_workload,
)

MI = 1024**2
GI = 1024**3

BLOCK_WITH_COMMENTS = """\
# Checkout service (owned by team shop)
apiVersion: apps/v1
kind: Deployment
metadata:
  name: checkout  # do not rename: DNS
  namespace: shop
  labels: {app: checkout, tier: "web"}
spec:
  replicas: 3
  template:
    metadata:
      annotations:
        note: 'keep "quotes" as they are'
    spec:
      containers:
        - name: app
          image: "registry.example/checkout:1.2.3"   # pinned
          resources:
            requests:
              cpu: "500m"      # measured in March
              memory: 1Gi
            # limits were tuned by hand
            limits:
              cpu: '1'
              memory: 1Gi
          ports:
            - containerPort: 8080
        - name: sidecar
          image: envoy:1.30
          args: ["--log-level", 'info']
"""

MULTI_DOC = """\
---
apiVersion: v1
kind: Service
metadata:
  name: checkout
  namespace: shop
spec:
  ports: [{port: 80}]
---   # the workload
apiVersion: apps/v1
kind: StatefulSet
metadata:
    name: ledger
    namespace: shop
spec:
    template:
        spec:
            containers:
            -   name: db
                image: postgres:16
                env:
                -   name: PGDATA
                    value: /data
            initContainers:
            -   name: migrate
                image: migrate:1
                resources: {}
...
---
# trailing document with only a comment
"""

FLOW_AND_NULL = """\
apiVersion: batch/v1
kind: CronJob
metadata: {name: report, namespace: jobs}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
          - {name: flowy, image: "report:2", resources: {requests: {cpu: 100m}}}
          - name: nulled
            image: report:2
            resources:
          - name: partial
            image: report:2
            resources:
              limits: {memory: 256Mi}
          - name: last
            command:
            - /bin/sh
            - -c
            - |
              echo one
              echo two
          restartPolicy: OnFailure"""

CRLF = BLOCK_WITH_COMMENTS.replace("\n", "\r\n")

NO_FINAL_NEWLINE = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: once
spec:
  template:
    spec:
      containers:
      - name: main
        image: busybox"""

# (fixture text, document index, kind, container)
CASES: list[tuple[str, int, str, str]] = [
    (BLOCK_WITH_COMMENTS, 0, "Deployment", "app"),
    (BLOCK_WITH_COMMENTS, 0, "Deployment", "sidecar"),
    (MULTI_DOC, 2, "StatefulSet", "db"),
    (MULTI_DOC, 2, "StatefulSet", "migrate"),
    (FLOW_AND_NULL, 0, "CronJob", "flowy"),
    (FLOW_AND_NULL, 0, "CronJob", "nulled"),
    (FLOW_AND_NULL, 0, "CronJob", "partial"),
    (FLOW_AND_NULL, 0, "CronJob", "last"),
    (CRLF, 0, "Deployment", "app"),
    (NO_FINAL_NEWLINE, 0, "Job", "main"),
]

FULL = {
    "cpu_request_cores": 0.348,
    "cpu_limit_cores": 1.5,
    "memory_request_bytes": 512 * MI,
    "memory_limit_bytes": 768 * MI,
    "jvm_max_heap_bytes": None,
}


def _compose(body: str) -> Node:
    node: Node = YAML(typ="safe", pure=True).compose(body)
    return node


def _lookup(mapping: Node, key: str) -> tuple[Node, Node] | None:
    assert isinstance(mapping, MappingNode)
    for key_node, value in mapping.value:
        if key_node.value == key:
            return key_node, value
    return None


def _container_node(body: str, kind: str, container: str) -> Node:
    node = _compose(body)
    for key in (*POD_TEMPLATE_PATHS[kind], "spec"):
        found = _lookup(node, key)
        assert found is not None
        node = found[1]
    for list_key in ("containers", "initContainers"):
        found = _lookup(node, list_key)
        if found is None:
            continue
        for item in found[1].value:
            name = _lookup(item, "name")
            if name is not None and name[1].value == container:
                assert isinstance(item, MappingNode)
                return item
    raise AssertionError(container)


def _last_line(node: Node) -> int:
    if isinstance(node, MappingNode) and node.value and not node.flow_style:
        return _last_line(node.value[-1][1])
    if isinstance(node, SequenceNode) and node.value and not node.flow_style:
        return _last_line(node.value[-1])
    end = node.end_mark
    # Block scalars end at the start of the next line.
    if isinstance(node, ScalarNode) and node.style in ("|", ">"):
        return int(end.line) - 1
    return int(end.line)


def resources_lines(text: str, index: int, kind: str, container: str) -> set[int]:
    """0-based line numbers (in the whole file) of the container's resources block.

    For a flow-style container the whole container line counts, as the block is inline.
    """
    chunks = split_documents(text)
    offset = sum((c.prefix + c.body).count("\n") for c in chunks[:index])
    offset += chunks[index].prefix.count("\n")
    item = _container_node(chunks[index].body, kind, container)
    if isinstance(item, MappingNode) and item.flow_style:
        first, last = item.start_mark.line, item.end_mark.line
        return {offset + line for line in range(first, last + 1)}
    found = _lookup(item, "resources")
    if found is None:
        return set()
    key_node, value = found
    first = key_node.start_mark.line
    return {offset + line for line in range(first, max(first, _last_line(value)) + 1)}


def assert_confined(before: str, after: str, index: int, kind: str, *containers: str) -> None:
    """Every changed line is inside the containers' resources blocks (before/after)."""
    allowed_old: set[int] = set()
    allowed_new: set[int] = set()
    for container in containers:
        allowed_old |= resources_lines(before, index, kind, container)
        allowed_new |= resources_lines(after, index, kind, container)
    # A file without a final line break gets one when the block is appended at its end;
    # that is the only change allowed to a line outside the block.
    old_lines = (before if before.endswith("\n") else before + "\n").splitlines(keepends=True)
    new_lines = (after if after.endswith("\n") else after + "\n").splitlines(keepends=True)
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "equal":
            continue
        assert set(range(a0, a1)) <= allowed_old, (tag, old_lines[a0:a1], allowed_old)
        assert set(range(b0, b1)) <= allowed_new, (tag, new_lines[b0:b1], allowed_new)
    # Other documents, and the separators, are byte for byte the same.
    old_chunks, new_chunks = split_documents(before), split_documents(after)
    assert len(old_chunks) == len(new_chunks)
    for position, (old, new) in enumerate(zip(old_chunks, new_chunks, strict=True)):
        assert old.prefix == new.prefix
        if position != index:
            assert old.body == new.body


def read_resources(text: str, index: int, kind: str, container: str) -> dict[str, Any]:
    document = YAML(typ="safe", pure=True).load(split_documents(text)[index].body)
    node = document
    for key in (*POD_TEMPLATE_PATHS[kind], "spec"):
        node = node[key]
    for item in [*(node.get("containers") or ()), *(node.get("initContainers") or ())]:
        if item["name"] == container:
            resources: dict[str, Any] = item.get("resources") or {}
            return resources
    raise AssertionError(container)


def assert_quantities(resources: Mapping[str, Any], recommended: Mapping[str, Any]) -> None:
    fields = (
        ("requests", "cpu", "cpu_request_cores"),
        ("requests", "memory", "memory_request_bytes"),
        ("limits", "cpu", "cpu_limit_cores"),
        ("limits", "memory", "memory_limit_bytes"),
    )
    for section, key, field in fields:
        wanted = recommended.get(field)
        if wanted is None:
            continue
        actual = resources[section][key]
        if key == "cpu":
            assert parse_cpu(str(actual)) == pytest.approx(wanted, abs=0.001)
            assert parse_cpu(str(actual)) >= wanted - 1e-9  # rounded up, never down
        else:
            assert parse_memory(str(actual)) >= wanted
            assert parse_memory(str(actual)) - wanted < MI


@pytest.mark.parametrize(("text", "index", "kind", "container"), CASES)
def test_sets_every_quantity_and_touches_only_the_resources_block(
    text: str, index: int, kind: str, container: str
) -> None:
    after = patch_resources(text, index, kind, container, FULL)
    assert after != text
    assert_quantities(read_resources(after, index, kind, container), FULL)
    assert_confined(text, after, index, kind, container)
    assert patch_resources(after, index, kind, container, FULL) == after


def test_block_edit_keeps_quotes_comments_and_layout() -> None:
    after = patch_resources(BLOCK_WITH_COMMENTS, 0, "Deployment", "app", FULL)
    diff = [
        line
        for line in difflib.unified_diff(
            BLOCK_WITH_COMMENTS.splitlines(), after.splitlines(), lineterm="", n=0
        )
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert diff == [
        '-              cpu: "500m"      # measured in March',
        "-              memory: 1Gi",
        '+              cpu: "348m"      # measured in March',
        "+              memory: 512Mi",
        "-              cpu: '1'",
        "-              memory: 1Gi",
        "+              cpu: '1500m'",
        "+              memory: 768Mi",
    ]


def test_inserted_block_follows_the_files_indentation() -> None:
    after = patch_resources(MULTI_DOC, 2, "StatefulSet", "db", FULL)
    assert (
        "                image: postgres:16\n"
        "                resources:\n"
        "                    requests:\n"
        "                        cpu: 348m\n"
        "                        memory: 512Mi\n"
        "                    limits:\n"
        "                        cpu: 1500m\n"
        "                        memory: 768Mi\n"
        "                env:\n"
    ) in after


def test_flow_mappings_stay_flow() -> None:
    after = patch_resources(FLOW_AND_NULL, 0, "CronJob", "flowy", FULL)
    assert (
        '- {name: flowy, image: "report:2", resources: {requests: {cpu: 348m, memory: 512Mi}, '
        "limits: {cpu: 1500m, memory: 768Mi}}}"
    ) in after


def test_resources_go_after_the_image_or_else_the_name() -> None:
    after = patch_resources(FLOW_AND_NULL, 0, "CronJob", "last", FULL)
    assert after.endswith("restartPolicy: OnFailure")
    assert "- name: last\n            resources:\n              requests:\n" in after


def test_file_without_final_newline_gets_the_block_at_the_end() -> None:
    after = patch_resources(NO_FINAL_NEWLINE, 0, "Job", "main", FULL)
    assert after.startswith(NO_FINAL_NEWLINE + "\n        resources:\n")
    assert after.endswith("memory: 768Mi")


def test_crlf_is_kept() -> None:
    after = patch_resources(CRLF, 0, "Deployment", "sidecar", FULL)
    assert "\n" not in after.replace("\r\n", "")


def test_same_quantity_in_other_spelling_is_left_alone() -> None:
    text = BLOCK_WITH_COMMENTS.replace('"500m"', '"0.5"')
    same = {
        "cpu_request_cores": 0.5,
        "memory_request_bytes": GI,
        "cpu_limit_cores": 1.0,
        "memory_limit_bytes": 1024 * MI,
    }
    assert patch_resources(text, 0, "Deployment", "app", same) == text


def test_null_means_leave_as_is() -> None:
    only_requests = {"cpu_request_cores": 0.25, "cpu_limit_cores": None}
    after = patch_resources(BLOCK_WITH_COMMENTS, 0, "Deployment", "app", only_requests)
    resources = read_resources(after, 0, "Deployment", "app")
    assert resources["requests"]["cpu"] == "250m"
    assert resources["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert resources["requests"]["memory"] == "1Gi"
    nothing = dict.fromkeys(FULL)
    assert patch_resources(BLOCK_WITH_COMMENTS, 0, "Deployment", "sidecar", nothing) == (
        BLOCK_WITH_COMMENTS
    )


def test_inserting_requests_before_existing_limits_keeps_them_apart() -> None:
    after = patch_resources(FLOW_AND_NULL, 0, "CronJob", "partial", FULL)
    resources = read_resources(after, 0, "CronJob", "partial")
    assert resources == {
        "limits": {"memory": "768Mi", "cpu": "1500m"},
        "requests": {"cpu": "348m", "memory": "512Mi"},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            BLOCK_WITH_COMMENTS.replace("replicas: 3", "replicas: !!python/object:os.getcwd 3"),
            "Python-specific tag",
        ),
        (
            BLOCK_WITH_COMMENTS.replace(
                "  replicas: 3", "  x: &a [1]\n" + "".join(f"  y{i}: *a\n" for i in range(70))
            ),
            "aliases",
        ),
        (
            BLOCK_WITH_COMMENTS.replace(
                "memory: 1Gi\n            #", "memory: &m 1Gi\n            #"
            ).replace("args:", "env: [{name: M, value: *m}]\n          args:"),
            "anchor",
        ),
        (BLOCK_WITH_COMMENTS.replace("kind: Deployment", "kind: DaemonSet"), "not a Deployment"),
        (BLOCK_WITH_COMMENTS.replace("- name: app", "- name: api"), "containers: api, sidecar"),
        (BLOCK_WITH_COMMENTS.replace("spec:\n  replicas", "spek:\n  replicas"), "no 'spec'"),
    ],
)
def test_refuses_what_it_cannot_patch_safely(text: str, message: str) -> None:
    with pytest.raises(SinkError, match=message):
        patch_resources(text, 0, "Deployment", "app", FULL)


def test_document_index_out_of_range_is_an_error() -> None:
    with pytest.raises(SinkError, match="out of range"):
        patch_resources(BLOCK_WITH_COMMENTS, 3, "Deployment", "app", FULL)


cores = st.none() | st.floats(min_value=0.001, max_value=64, allow_nan=False)
mebibytes = st.none() | st.integers(min_value=1, max_value=256 * 1024).map(lambda m: m * MI)
odd_bytes = st.none() | st.integers(min_value=1, max_value=2**40)


@settings(max_examples=60, deadline=None)
@given(
    case=st.sampled_from(CASES),
    cpu_request=cores,
    cpu_limit=cores,
    memory_request=mebibytes | odd_bytes,
    memory_limit=mebibytes,
)
def test_any_recommendation_is_confined_exact_and_idempotent(
    case: tuple[str, int, str, str],
    cpu_request: float | None,
    cpu_limit: float | None,
    memory_request: int | None,
    memory_limit: int | None,
) -> None:
    text, index, kind, container = case
    recommended = {
        "cpu_request_cores": cpu_request,
        "cpu_limit_cores": cpu_limit,
        "memory_request_bytes": memory_request,
        "memory_limit_bytes": memory_limit,
    }
    after = patch_resources(text, index, kind, container, recommended)
    assert_confined(text, after, index, kind, container)
    assert_quantities(read_resources(after, index, kind, container), recommended)
    assert patch_resources(after, index, kind, container, recommended) == after


JVM_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  template:
    spec:
      containers:
        - name: app
          image: api:1   # pinned
          env:
            - name: LOG_LEVEL
              value: info
            - name: JAVA_TOOL_OPTIONS
              value: '-Xmx768m -XX:+UseG1GC'   # heap set by hand
          resources:
            limits:
              memory: 1Gi
"""


def test_env_patch_rewrites_only_that_value_and_keeps_the_comment() -> None:
    patched = patch_env_value(
        JVM_DEPLOYMENT,
        0,
        "Deployment",
        "app",
        name="JAVA_TOOL_OPTIONS",
        value="-Xmx82m -XX:+UseG1GC",
    )
    changed = [
        (a, b)
        for a, b in zip(JVM_DEPLOYMENT.splitlines(), patched.splitlines(), strict=True)
        if a != b
    ]
    assert changed == [
        (
            "              value: '-Xmx768m -XX:+UseG1GC'   # heap set by hand",
            "              value: '-Xmx82m -XX:+UseG1GC'   # heap set by hand",
        )
    ]
    # The same value again is no change at all.
    assert (
        patch_env_value(
            patched,
            0,
            "Deployment",
            "app",
            name="JAVA_TOOL_OPTIONS",
            value="-Xmx82m -XX:+UseG1GC",
        )
        == patched
    )


def test_env_patch_reports_a_missing_variable_and_refuses_value_from() -> None:
    with pytest.raises(EnvVarMissingError):
        patch_env_value(
            JVM_DEPLOYMENT, 0, "Deployment", "app", name="JDK_JAVA_OPTIONS", value="-Xmx1g"
        )
    from_secret = JVM_DEPLOYMENT.replace(
        "              value: '-Xmx768m -XX:+UseG1GC'   # heap set by hand",
        "              valueFrom: {configMapKeyRef: {name: jvm, key: opts}}",
    )
    with pytest.raises(SinkError, match="no plain value"):
        patch_env_value(
            from_secret, 0, "Deployment", "app", name="JAVA_TOOL_OPTIONS", value="-Xmx1g"
        )


# -- JVM options, sequence entries, values paths ------------------------------------------


@pytest.mark.parametrize(
    ("existing", "changed", "expected"),
    [
        ("-Xms512m -Xmx768m -XX:+UseG1GC", ["-Xmx1g"], "-Xms512m -Xmx1g -XX:+UseG1GC"),
        ("-XX:+UseG1GC", ["-XX:-UseG1GC", "-Xmx1g"], "-XX:-UseG1GC -Xmx1g"),
        (
            "-XX:MaxRAMPercentage=75 -Dx=1",
            ["-XX:MaxRAMPercentage=60"],
            "-XX:MaxRAMPercentage=60 -Dx=1",
        ),
        ("-Xmx1g -Xmx2g -Dx=1", ["-Xmx3g", "-Dx=2"], "-Xmx3g -Dx=2"),
        ("", ["-Xmx1g"], "-Xmx1g"),
        ("-Xlog:gc -verbose:gc", [], "-Xlog:gc -verbose:gc"),
    ],
)
def test_jvm_options_merge_in_place(existing: str, changed: list[str], expected: str) -> None:
    assert merge_jvm_options(existing, changed) == expected


option = st.sampled_from(
    ["-Xmx1g", "-Xmx512m", "-Xms256m", "-XX:+UseG1GC", "-XX:-UseG1GC", "-Dfoo=1", "-Dfoo=2",
     "-XX:MaxRAMPercentage=75", "-XX:MaxRAMPercentage=50", "-Xlog:gc", "-verbose:gc"]
)  # fmt: skip


@given(st.lists(option, max_size=8), st.lists(option, max_size=4))
def test_merged_options_keep_the_rest_and_set_each_changed_one_once(
    existing: list[str], changed: list[str]
) -> None:
    merged = merge_jvm_options(" ".join(existing), changed).split()
    wanted = {jvm_option_key(o): o for o in changed}
    for key, value in wanted.items():
        assert [o for o in merged if jvm_option_key(o) == key] == [value]
    untouched = [o for o in existing if jvm_option_key(o) not in wanted]
    assert [o for o in merged if jvm_option_key(o) not in wanted] == untouched
    assert merge_jvm_options(" ".join(merged), changed).split() == merged


def test_env_entry_is_added_to_an_overlay_patch_in_its_style() -> None:
    patch = (
        "kind: Deployment\nmetadata:\n  name: api\nspec:\n  template:\n    spec:\n"
        "      containers:\n      - name: app\n        resources: {}  # set below\n"
    )
    after = add_env_entry(patch, 0, "Deployment", "app", name="JAVA_TOOL_OPTIONS", value="-Xmx1g")
    assert (
        after
        == patch + '        env:\n        - name: JAVA_TOOL_OPTIONS\n          value: "-Xmx1g"\n'
    )
    again = add_env_entry(after, 0, "Deployment", "app", name="JAVA_OPTS", value="a: b")
    assert again == after + '        - name: JAVA_OPTS\n          value: "a: b"\n'


def test_a_container_entry_is_added_to_a_patch_file() -> None:
    patch = (
        "kind: CronJob\nmetadata:\n  name: r\nspec:\n  jobTemplate:\n    spec:\n      template:\n"
        "        spec:\n          containers:\n"
        "            -   name: main\n                image: x\n"
    )
    after = add_container_entry(patch, 0, "CronJob", "sidecar")
    assert after == patch + "            -   name: sidecar\n"


@pytest.mark.parametrize(
    ("kustomization", "added"),
    [
        ("resources:\n- ../base\npatches:\n- path: a.yaml\n", "- path: daytwo.yaml\n"),
        (
            "resources:\n  - ../base\npatchesStrategicMerge:\n  - a.yaml  # old style\n",
            "  - daytwo.yaml\n",
        ),
        ("resources:\n  - ../base\n", "patches:\n  - path: daytwo.yaml\n"),
        ("resources:\n- ../base\nnamespace: x", "\npatches:\n- path: daytwo.yaml"),
    ],
)
def test_a_new_patch_is_listed_in_the_kustomizations_style(kustomization: str, added: str) -> None:
    after = list_patch_in_kustomization(kustomization, "daytwo.yaml")
    assert after == kustomization + added
    assert list_patch_in_kustomization(after, "daytwo.yaml") == after


VALUES = """\
# values
app: &app
  image: {tag: "1"}
  resources:   # hand-sized
    limits: {memory: 1Gi}
worker:
  replicas: 2
copy: *app
"""


def test_values_paths_are_patched_in_place_or_created() -> None:
    worker = patch_resources_at(VALUES, 0, ("worker", "resources"), {"cpu_request_cores": 0.25})
    assert worker == VALUES.replace(
        "  replicas: 2\n", "  replicas: 2\n  resources:\n    requests:\n      cpu: 250m\n"
    )
    with pytest.raises(SinkError, match="anchor"):
        patch_resources_at(VALUES, 0, ("app", "resources"), {"cpu_request_cores": 0.25})
    with pytest.raises(SinkError, match="has no 'api'"):
        patch_resources_at(VALUES, 0, ("api", "resources"), {"cpu_request_cores": 0.25})
    flat = "resources: {limits: {memory: 1Gi}}  # flow\n"
    assert patch_resources_at(flat, 0, ("resources",), {"memory_limit_bytes": 3 * GI // 2}) == (
        "resources: {limits: {memory: 1536Mi}}  # flow\n"
    )


def test_env_values_keep_their_quoting_style_when_they_can() -> None:
    plain = JVM_DEPLOYMENT.replace("'-Xmx768m -XX:+UseG1GC'", "-Xmx768m")
    after = patch_env_value(plain, 0, "Deployment", "app", name="JAVA_TOOL_OPTIONS", value="-Xmx1g")
    assert "              value: -Xmx1g   # heap set by hand\n" in after
    risky = patch_env_value(plain, 0, "Deployment", "app", name="JAVA_TOOL_OPTIONS", value="a #b")
    assert '              value: "a #b"   # heap set by hand\n' in risky


def test_container_change_reads_the_contract() -> None:
    change = ContainerChange.from_recommendation(
        {
            "container": "app",
            "recommended": {"cpu_request_cores": 0.5},
            "jvm_options": {"java_tool_options": "-Xmx1g -XX:+UseG1GC", "changed": ["-Xmx1g"]},
        }
    )
    assert change == ContainerChange(
        "app", {"cpu_request_cores": 0.5}, "-Xmx1g -XX:+UseG1GC", ("-Xmx1g",)
    )
    bare = ContainerChange.from_recommendation(
        {"container": "db", "recommended": {}, "jvm_options": None}
    )
    assert (bare.jvm_options, bare.jvm_changed) == (None, ())


def test_patch_workload_writes_nothing_when_a_file_is_hostile() -> None:
    files = {
        "a.yaml": BLOCK_WITH_COMMENTS,
        "b.yaml": BLOCK_WITH_COMMENTS.replace("replicas: 3", "replicas: !!python/name:os.system"),
    }
    with pytest.raises(SinkError, match=r"b\.yaml .*Python-specific tag"):
        patch_workload(files, "c/shop/Deployment/checkout", [ContainerChange("app", FULL)])
