"""agents/mapping.py: loading and validating the bare-metal mapping file."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.mapping import WORKLOAD_KINDS, AgentMapping, load_mapping, parse_mapping
from pipeline.errors import ConfigError

EXAMPLE = """\
cluster: local
cgroups:
  - path: /daytwo-demo/burner      # relative to each controller's mount
    workload: local/demo/Deployment/burner
    container: burner
  - path: /daytwo-demo//sidecar/
    workload: local/demo/Deployment/burner
    container: sidecar
  - path: /daytwo-demo/db
    workload: local/demo/StatefulSet/db
    container: postgres
"""


def test_example_file_loads_and_groups_by_workload(tmp_path: Path) -> None:
    file = tmp_path / "agent.yaml"
    file.write_text(EXAMPLE)
    mapping = load_mapping(file)
    assert mapping.cluster == "local"
    assert [entry.path for entry in mapping.cgroups] == [
        "/daytwo-demo/burner",
        "/daytwo-demo/sidecar",  # made absolute and normalised
        "/daytwo-demo/db",
    ]
    grouped = mapping.workloads()
    assert list(grouped) == ["local/demo/Deployment/burner", "local/demo/StatefulSet/db"]
    assert [entry.container for entry in grouped["local/demo/Deployment/burner"]] == [
        "burner",
        "sidecar",
    ]
    assert mapping.cgroups[0].container_key == "local/demo/Deployment/burner:burner"


@pytest.mark.parametrize(
    ("replace", "by", "field"),
    [
        ("workload: local/demo/Deployment/burner\n    container: burner",
         "workload: local/demo/burner\n    container: burner", "cgroups[0].workload"),
        ("Deployment/burner\n    container: burner",
         "Pod/burner\n    container: burner", "cgroups[0].workload"),
        ("container: postgres", "container: Postgres!", "cgroups[2].container"),
        ("path: /daytwo-demo/db", "path: /daytwo-demo/../etc", "cgroups[2].path"),
        ("path: /daytwo-demo/db", "path: /", "cgroups[2].path"),
        ("cluster: local", "cluster: local\nextra: 1", "extra"),
        ("  container: postgres", "  container: postgres\n    colour: red", "cgroups[2].colour"),
    ],
)  # fmt: skip
def test_errors_name_the_file_and_the_field(
    tmp_path: Path, replace: str, by: str, field: str
) -> None:
    assert replace in EXAMPLE
    file = tmp_path / "bad.yaml"
    file.write_text(EXAMPLE.replace(replace, by, 1))
    with pytest.raises(ConfigError) as raised:
        load_mapping(file)
    message = str(raised.value)
    assert message.startswith(str(file))
    assert field in message


def test_workload_outside_the_cluster_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"cgroups\[0\]\.workload .* not in cluster 'prod'"):
        parse_mapping(EXAMPLE.replace("cluster: local", "cluster: prod"), source="x.yaml")


def test_same_container_twice_is_refused() -> None:
    text = EXAMPLE.replace("container: sidecar", "container: burner")
    with pytest.raises(ConfigError, match=r"cgroups\[1\]: container"):
        parse_mapping(text)


def test_same_path_twice_is_refused() -> None:
    text = EXAMPLE.replace("path: /daytwo-demo/db", "path: /daytwo-demo/burner")
    with pytest.raises(ConfigError, match=r"cgroups\[2\]\.path"):
        parse_mapping(text)


@pytest.mark.parametrize(
    "text",
    ["cluster: local\ncgroups: []\n", "- a\n- b\n", "cluster: [unclosed\n", ""],
)
def test_empty_wrong_shape_or_broken_yaml_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match=r"mapping\.yaml"):
        parse_mapping(text, source="mapping.yaml")


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_mapping(tmp_path / "absent.yaml")


def test_yaml_tags_are_not_executed() -> None:
    text = "cluster: !!python/object/apply:os.system ['true']\ncgroups: []\n"
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_mapping(text)


segment = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
container_name = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?", fullmatch=True)


@given(
    cluster=segment,
    namespace=segment,
    kind=st.sampled_from(sorted(WORKLOAD_KINDS)),
    name=segment,
    container=container_name,
    path=st.lists(segment, min_size=1, max_size=4),
)
def test_any_well_formed_entry_round_trips(
    cluster: str, namespace: str, kind: str, name: str, container: str, path: list[str]
) -> None:
    workload = f"{cluster}/{namespace}/{kind}/{name}"
    text = (
        f'cluster: "{cluster}"\ncgroups:\n'
        f'  - path: "/{"/".join(path)}"\n    workload: "{workload}"\n    container: "{container}"\n'
    )
    mapping = parse_mapping(text)
    assert isinstance(mapping, AgentMapping)
    assert mapping.cgroups[0].workload == workload
    assert mapping.cgroups[0].path == "/" + "/".join(path)
    assert mapping.workloads() == {workload: mapping.cgroups}
