"""Score the current champion on this run's evaluation set (the gate's other half).

A champion's metrics from its own run were measured on older data; comparing them with a
challenger's metrics on new data would reward whichever happened to get the easier period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
from mlflow.tracking import MlflowClient

from loopline.models.bundle import BundleError, load_bundle
from loopline.tracking.registry import CHAMPION, alias_uri, version_by_alias
from loopline.types.alarms import AlarmPolicy
from loopline.types.dataset import DatasetRoles

if TYPE_CHECKING:  # scoring needs torch; the operator (the runtime image, no torch) does not
    from loopline.models.evaluation import Evaluation


@dataclass(frozen=True)
class ChampionScore:
    version: str
    evaluation: Evaluation


def score_champion(
    client: MlflowClient,
    registered_name: str,
    evaluation_set: pd.DataFrame,
    roles: DatasetRoles | None = None,
    alarms: AlarmPolicy | None = None,
) -> ChampionScore | None:
    """The champion's metrics on `evaluation_set`, or None if there is no champion yet.

    `roles` (the run's) name the label column, so the champion is judged on the same label as
    the challenger whatever it recorded itself; `alarms` (the run's) count its alarm events
    and judge its false-alarm rate the same way too."""
    current = version_by_alias(client, registered_name, CHAMPION)
    if current is None:
        return None
    from loopline.models.evaluation import evaluate_bundle

    bundle = load_bundle(alias_uri(registered_name, CHAMPION), tracking_uri=client.tracking_uri)
    try:
        evaluation = evaluate_bundle(bundle, evaluation_set, roles, alarms)
    except (BundleError, KeyError, ValueError) as exc:
        raise BundleError(
            f"champion v{current.version} cannot score this evaluation set ({exc}); its features "
            "differ from this run's: retire it or keep the feature service unchanged"
        ) from exc
    return ChampionScore(version=str(current.version), evaluation=evaluation)


def restore_champion(client: MlflowClient, registered_name: str, version: str) -> str | None:
    """Point `champion` at `version` unless it already does; the version it pointed at
    before (None when there was no alias), so the caller can tell a repair from a no-op and
    say what it repaired."""
    current = version_by_alias(client, registered_name, CHAMPION)
    found = None if current is None else str(current.version)
    if found != version:
        client.set_registered_model_alias(registered_name, CHAMPION, version)
    return found
