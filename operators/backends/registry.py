"""The model registry as the Model operator drives it: where each Model's `champion` points.

Why the operator moves the alias, not the training run: a version that passes the gate is
rolled out as a canary first, and a canary can still be rolled back. `champion` names the
version that serves all traffic; the drift monitor takes its reference from it and the next
run's gate compares against it, so it must not name a canary. Runs the operator starts leave
it alone (`TrainingRunSpec.move_champion`).

Deleting a Model removes its aliases (`release`), not its versions.

How each canary ended is tagged on its version (`mark_rollouts`, `loopline.rollout.outcome`
`promoted|rolled_back|superseded` and `.reason`): the gate's tag says only that the version went on to a
canary, and MLflow is where an engineer looks for why a version that passed never served.

Level-based like the rest of the operator: every reconcile says where the alias should point,
and the registry is read every time (one small request per reconcile interval). Anyone who can
write to MLflow can move the alias, and the monitor follows it; caching what this process last
set let a moved alias stand for minutes, so it is not cached.
"""

from __future__ import annotations

import logging
import threading

from loopline.operators.builders.champion import ChampionCheck
from loopline.operators.builders.model import ChampionAlias, RolloutMark
from loopline.operators.errors import BackendUnavailable
from loopline.types.status import RolloutOutcome

log = logging.getLogger(__name__)

ROLLOUT_TAG_VALUES = {
    RolloutOutcome.PROMOTED: "promoted",
    RolloutOutcome.ROLLED_BACK: "rolled_back",
    RolloutOutcome.SUPERSEDED: "superseded",
    RolloutOutcome.REJECTED: "rejected",  # by a person, or by the approval timeout
}


class RegistryBackend:
    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._marked: set[RolloutMark] = set()
        self._lock = threading.Lock()

    def ensure_champion(self, alias: ChampionAlias) -> ChampionCheck:
        """Point the alias at `alias.version` and say where it pointed before. Raises
        BackendUnavailable when the registry cannot be reached or refuses (a version deleted
        by hand): the Model shows Degraded with the message and the call is retried."""
        from mlflow import MlflowClient

        from loopline.tracking.champion import restore_champion

        try:
            client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            found = restore_champion(client, alias.registered_model, alias.version)
        except Exception as exc:
            raise BackendUnavailable(
                f"MLflow: cannot point {alias.registered_model}@champion at version "
                f"{alias.version}: {type(exc).__name__}: {exc}"
            ) from exc
        moved = found != alias.version
        if moved:
            log.info(
                "%s@champion -> version %s (was %s)",
                alias.registered_model,
                alias.version,
                found or "unset",
            )
        return ChampionCheck(alias.registered_model, alias.version, found, moved)

    def mark_rollouts(self, marks: list[RolloutMark]) -> int:
        """Tag each version with how its rollout ended, once per process (the marks come from
        the Model's run history on every reconcile); the number of versions tagged now.
        BackendUnavailable when the registry cannot be reached; a version deleted by hand is
        skipped."""
        with self._lock:
            todo = [m for m in marks if m not in self._marked]
        if not todo:
            return 0
        from mlflow import MlflowClient

        from loopline.tracking.registry import mark_rollout

        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        done = 0
        for mark in todo:
            try:
                tagged = mark_rollout(
                    client,
                    mark.registered_model,
                    mark.version,
                    ROLLOUT_TAG_VALUES[mark.outcome],
                    mark.message,
                )
            except Exception as exc:
                raise BackendUnavailable(
                    f"MLflow: cannot tag {mark.registered_model} version {mark.version} "
                    f"{mark.outcome.value}: {type(exc).__name__}: {exc}"
                ) from exc
            if not tagged:
                log.info(
                    "%s version %s no longer exists; its rollout (%s) is not tagged",
                    mark.registered_model,
                    mark.version,
                    mark.outcome.value,
                )
            done += tagged
            with self._lock:
                self._marked.add(mark)
        return done

    def release(self, registered_model: str) -> None:
        """Remove the aliases of a deleted Model (`champion`, `challenger`); its versions stay
        as its history. A Model created again under the same name then starts without a
        champion, instead of gating its first version against one that no longer serves."""
        from mlflow import MlflowClient

        from loopline.tracking.registry import CHALLENGER, CHAMPION, version_by_alias

        with self._lock:
            self._marked = {m for m in self._marked if m.registered_model != registered_model}
        try:
            client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            for alias in (CHAMPION, CHALLENGER):
                if version_by_alias(client, registered_model, alias) is not None:
                    client.delete_registered_model_alias(registered_model, alias)
        except Exception as exc:
            raise BackendUnavailable(
                f"MLflow: cannot remove the aliases of {registered_model}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
