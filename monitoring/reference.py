"""The reference sample the live windows are compared with, and where it comes from.

The champion's training run logs `reference/reference.parquet` (<= 5000 normal training rows,
written by the training pipeline). `MlflowReferenceSource` follows alias -> model version -> run -> artifact;
its version is the model version, so a promotion (the alias moving) is a new reference and
re-arms the monitor. Tests and the demo hand a frame or a parquet file over directly.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

REFERENCE_ARTIFACT = "reference/reference.parquet"
MAX_REFERENCE_ROWS = 5000


@dataclass(frozen=True)
class Reference:
    """Reference rows (float64, NaN where missing) with their feature names and version."""

    values: np.ndarray
    feature_names: list[str]
    version: str
    source: str

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        version: str,
        source: str = "frame",
        feature_names: list[str] | None = None,
        max_rows: int = MAX_REFERENCE_ROWS,
    ) -> Reference:
        """Take `feature_names` of `frame`, in that order, or else its numeric columns.

        Without names the frame must hold features only, as the training run's reference
        artifact does: nothing here knows which column of a data set is its entity or label."""
        if feature_names is None:
            feature_names = [
                str(c)
                for c in frame.columns
                if pd.api.types.is_numeric_dtype(frame[c])
                and not pd.api.types.is_bool_dtype(frame[c])
            ]
        missing = [c for c in feature_names if c not in frame.columns]
        if missing:
            raise ValueError(f"reference ({source}) lacks feature column(s) {missing}")
        if not feature_names:
            raise ValueError(f"reference ({source}) has no numeric feature columns")
        if len(frame) < 2:
            raise ValueError(f"reference ({source}) has {len(frame)} rows; need at least 2")
        values = frame[feature_names].to_numpy(dtype=np.float64, na_value=np.nan)
        if values.shape[0] > max_rows:
            idx = np.random.default_rng(0).choice(values.shape[0], size=max_rows, replace=False)
            values = values[np.sort(idx)]
        return cls(values=values, feature_names=list(feature_names), version=version, source=source)


class ReferenceSource(Protocol):
    def current_version(self) -> str:
        """The version the source would load now (cheap; polled)."""

    def load(self) -> Reference:
        """Load the current reference."""


class FrameReferenceSource:
    """A reference handed over in memory (tests, demo); replace it with `set`."""

    def __init__(self, frame: pd.DataFrame, version: str = "1") -> None:
        self._frame, self._version = frame, version

    def set(self, frame: pd.DataFrame, version: str) -> None:
        self._frame, self._version = frame, version

    def current_version(self) -> str:
        return self._version

    def load(self) -> Reference:
        return Reference.from_frame(self._frame, version=self._version, source="frame")


class ParquetReferenceSource:
    """A parquet file; its version is a hash of its content."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def current_version(self) -> str:
        if not self.path.is_file():
            raise FileNotFoundError(f"reference file {self.path} does not exist")
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]

    def load(self) -> Reference:
        version = self.current_version()
        return Reference.from_frame(
            pd.read_parquet(self.path), version=version, source=str(self.path)
        )


class MlflowReferenceSource:
    """models:/<registered name>@<alias> -> that version's run -> reference/reference.parquet."""

    def __init__(self, tracking_uri: str, registered_model: str, alias: str = "champion") -> None:
        self.tracking_uri = tracking_uri
        self.registered_model = registered_model
        self.alias = alias

    def _client(self):  # type: ignore[no-untyped-def]
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def current_version(self) -> str:
        mv = self._client().get_model_version_by_alias(self.registered_model, self.alias)
        return str(mv.version)

    def load(self) -> Reference:
        client = self._client()
        mv = client.get_model_version_by_alias(self.registered_model, self.alias)
        if not mv.run_id:
            raise ValueError(
                f"model version {self.registered_model}/{mv.version} has no run; "
                f"cannot find its {REFERENCE_ARTIFACT}"
            )
        with tempfile.TemporaryDirectory(prefix="loopline-ref-") as tmp:
            from mlflow.artifacts import download_artifacts

            path = download_artifacts(
                run_id=mv.run_id,
                artifact_path=REFERENCE_ARTIFACT,
                dst_path=tmp,
                tracking_uri=self.tracking_uri,
            )
            frame = pd.read_parquet(path)
        return Reference.from_frame(
            frame,
            version=str(mv.version),
            source=f"models:/{self.registered_model}@{self.alias} (run {mv.run_id})",
        )


def reference_source_from_uri(uri: str, *, tracking_uri: str) -> ReferenceSource:
    """`models:/<name>@<alias>` or a parquet path."""
    if uri.startswith("models:/"):
        name, sep, alias = uri.removeprefix("models:/").partition("@")
        if not sep or not name or not alias:
            raise ValueError(f"reference_uri {uri!r}: expected models:/<registered model>@<alias>")
        return MlflowReferenceSource(tracking_uri, name, alias)
    path = Path(uri)
    if path.suffix != ".parquet":
        raise ValueError(f"reference_uri {uri!r}: expected models:/<name>@<alias> or a .parquet")
    return ParquetReferenceSource(path)
