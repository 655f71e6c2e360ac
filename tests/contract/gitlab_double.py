"""A GitLab merge-request API double: documented request checks, recorded answers.

Serves the JSON in ``tests/contract/gitlab/`` (see its README for the documentation each
file follows) through ``httpx.MockTransport``. Each request is checked against the
documented attributes of its endpoint; a violation answers 400 the way GitLab does
(``{"error": "title is missing"}``) and is recorded, so a test can assert there were none.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

RECORDED = Path(__file__).resolve().parent / "gitlab"
PROJECT_SEGMENT = "platform%2Fgitops"
API_PREFIX = f"/api/v4/projects/{PROJECT_SEGMENT}/merge_requests"

_STATES = {"opened", "closed", "locked", "merged", "all"}
_LIST_QUERY = {"state", "source_branch", "target_branch", "order_by", "sort", "per_page", "page"}
_CREATE_REQUIRED = {"source_branch", "target_branch", "title"}
_CREATE_OPTIONAL = {
    "description",
    "labels",
    "remove_source_branch",
    "assignee_id",
    "assignee_ids",
    "reviewer_ids",
    "milestone_id",
    "squash",
    "allow_collaboration",
    "target_project_id",
}
_UPDATE_OPTIONAL = {
    "title",
    "description",
    "labels",
    "add_labels",
    "remove_labels",
    "target_branch",
    "state_event",
    "remove_source_branch",
    "squash",
    "discussion_locked",
    "allow_collaboration",
    "assignee_id",
    "assignee_ids",
    "reviewer_ids",
    "milestone_id",
}
_NOTE_FIELDS = {"body", "created_at", "internal", "merge_request_diff_head_sha"}


def recorded(name: str) -> Any:
    """A recorded answer, freshly decoded (tests may modify it)."""
    return json.loads((RECORDED / name).read_text(encoding="utf-8"))


@dataclass
class GitLabDouble:
    """Routes ``/api/v4/projects/platform%2Fgitops/merge_requests...`` to recorded JSON.

    ``merge_requests`` maps iid → MR object (start: the two recorded MRs); creates and
    updates change it, so find-after-create sees the new MR. ``violations`` lists every
    request that broke the documented contract.
    """

    token: str
    merge_requests: dict[int, dict[str, Any]] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(
        default_factory=lambda: recorded("merge_request_commits.json")
    )
    requests: list[httpx.Request] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.merge_requests:
            for name in ("merge_request.json", "merge_request_closed.json"):
                mr = recorded(name)
                self.merge_requests[int(mr["iid"])] = mr

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def _reject(self, message: str) -> httpx.Response:
        self.violations.append(message)
        return httpx.Response(400, json={"error": message})

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("private-token") != self.token:
            return httpx.Response(401, json={"message": "401 Unauthorized"})
        raw_path = request.url.raw_path.decode().split("?", 1)[0]
        if not raw_path.startswith(API_PREFIX):
            return self._reject(f"project path not encoded as one segment: {raw_path}")
        rest = raw_path.removeprefix(API_PREFIX).strip("/")
        parts = rest.split("/") if rest else []
        body: dict[str, Any] = json.loads(request.content) if request.content else {}
        if request.method == "GET" and not parts:
            return self._list(request)
        if request.method == "POST" and not parts:
            return self._create(body)
        if len(parts) >= 1 and parts[0].isdigit():
            iid = int(parts[0])
            if iid not in self.merge_requests:
                return httpx.Response(404, json={"message": "404 Not found"})
            if request.method == "GET" and len(parts) == 1:
                return httpx.Response(200, json=self.merge_requests[iid])
            if request.method == "PUT" and len(parts) == 1:
                return self._update(iid, body)
            if request.method == "GET" and parts[1:] == ["commits"]:
                per_page = int(request.url.params.get("per_page", "20"))
                return httpx.Response(200, json=self.commits[:per_page])
            if request.method == "POST" and parts[1:] == ["notes"]:
                return self._note(iid, body)
        return httpx.Response(404, json={"error": "404 Not Found"})

    def _list(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        unknown = set(params) - _LIST_QUERY
        if unknown:
            return self._reject(f"undocumented list parameters {sorted(unknown)}")
        state = params.get("state", "all")
        if state not in _STATES:
            return self._reject("state does not have a valid value")
        found = [
            mr
            for mr in sorted(self.merge_requests.values(), key=lambda m: -int(m["iid"]))
            if (state == "all" or mr["state"] == state)
            and ("source_branch" not in params or mr["source_branch"] == params["source_branch"])
        ]
        page = int(params.get("page", "1"))
        per_page = int(params.get("per_page", "20"))
        return httpx.Response(200, json=found[(page - 1) * per_page : page * per_page])

    def _create(self, body: dict[str, Any]) -> httpx.Response:
        missing = _CREATE_REQUIRED - set(body)
        if missing:
            return self._reject(f"{sorted(missing)[0]} is missing")
        unknown = set(body) - _CREATE_REQUIRED - _CREATE_OPTIONAL
        if unknown:
            return self._reject(f"undocumented create attributes {sorted(unknown)}")
        if "labels" in body and not isinstance(body["labels"], str):
            return self._reject("labels is invalid (expected a comma-separated string)")
        for mr in self.merge_requests.values():
            if mr["source_branch"] == body["source_branch"] and mr["state"] == "opened":
                return httpx.Response(409, json=recorded("conflict.json"))
        iid = max(self.merge_requests, default=0) + 1
        mr = copy.deepcopy(recorded("merge_request.json"))
        mr.update(
            iid=iid,
            id=1000 + iid,
            title=body["title"],
            description=body.get("description", ""),
            source_branch=body["source_branch"],
            target_branch=body["target_branch"],
            labels=[label for label in body.get("labels", "").split(",") if label],
            web_url=f"https://gitlab.example.com/platform/gitops/-/merge_requests/{iid}",
        )
        self.merge_requests[iid] = mr
        return httpx.Response(201, json=mr)

    def _update(self, iid: int, body: dict[str, Any]) -> httpx.Response:
        if not body:
            return self._reject("at least one optional attribute must be provided")
        unknown = set(body) - _UPDATE_OPTIONAL
        if unknown:
            return self._reject(f"undocumented update attributes {sorted(unknown)}")
        for key in ("labels", "add_labels", "remove_labels"):
            if key in body and not isinstance(body[key], str):
                return self._reject(f"{key} is invalid (expected a comma-separated string)")
        mr = self.merge_requests[iid]
        for key in ("title", "description"):
            if key in body:
                mr[key] = body[key]
        if "add_labels" in body:
            mr["labels"] = list(dict.fromkeys([*mr["labels"], *body["add_labels"].split(",")]))
        return httpx.Response(200, json=mr)

    def _note(self, iid: int, body: dict[str, Any]) -> httpx.Response:
        if not body.get("body"):
            return self._reject("body is missing")
        unknown = set(body) - _NOTE_FIELDS
        if unknown:
            return self._reject(f"undocumented note attributes {sorted(unknown)}")
        note = recorded("note.json")
        note.update(body=body["body"], noteable_iid=iid, noteable_id=self.merge_requests[iid]["id"])
        return httpx.Response(201, json=note)
