"""The ModelApprovals of a Model, read for its reconcile, and their status written back.

People create ModelApprovals (`loopline approve|reject`, or kubectl); the operator only lists
them and says on each whether it was applied. An approval whose spec no longer parses (stored
before a schema change) is reported on its status instead of breaking the Model's reconcile.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from loopline.operators.builders.model_plan import ApprovalMark, ApprovalRecord
from loopline.operators.errors import BackendUnavailable
from loopline.types.approval import ModelApprovalSpec
from loopline.types.common import GROUP, VERSION

log = logging.getLogger(__name__)
PLURAL = "modelapprovals"


class Approvals:
    def __init__(self, custom: k8s.CustomObjectsApi) -> None:
        self.custom = custom

    def of(self, namespace: str, model: str) -> tuple[ApprovalRecord, ...]:
        """The ModelApprovals in `namespace` about `model`, oldest first. Without the CRD
        (an install from before approvals) there are none; any other failure is the API
        server's, retried like a backend's."""
        try:
            listing = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        except ApiException as exc:
            if exc.status == 404:
                return ()
            raise BackendUnavailable(f"listing {PLURAL} in {namespace}: {exc.reason}") from exc
        records = []
        for item in listing.get("items", []):
            meta, status = item.get("metadata") or {}, item.get("status") or {}
            try:
                spec = ModelApprovalSpec.model_validate(item.get("spec") or {})
            except ValidationError as exc:
                log.warning("%s/%s: unreadable ModelApproval: %s", namespace, meta.get("name"), exc)
                continue
            if spec.model != model:
                continue
            created = datetime.fromisoformat(str(meta["creationTimestamp"]).replace("Z", "+00:00"))
            records.append(
                ApprovalRecord(
                    name=meta["name"],
                    spec=spec,
                    created_at=created,
                    applied=bool(status.get("applied")),
                    message=str(status.get("message") or ""),
                )
            )
        return tuple(sorted(records, key=lambda r: (r.created_at, r.name)))

    def mark(self, namespace: str, marks: Iterable[ApprovalMark]) -> None:
        """Write each mark on its ModelApproval's status (best effort: the decision itself is
        in the Model's status and history; a lost mark is written again next time)."""
        for mark in marks:
            body = {"status": {"applied": mark.applied, "message": mark.message}}
            try:
                self.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, PLURAL, mark.name, body
                )
            except ApiException as exc:
                if exc.status != 404:
                    log.warning("%s/%s: status not written: %s", namespace, mark.name, exc)
