"""Process-wide settings shared by every Loopline component.

Every setting has a default that works on a laptop, so nothing needs configuring to run
locally; on a cluster the Helm chart sets them through `LOOPLINE_*` environment variables.
Components with settings of their own (serving, monitoring, operators) define their own
`BaseSettings` class with a longer prefix (`LOOPLINE_SERVING_`, …), as MLServer does.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback)


class Settings(BaseSettings):
    """Locations and service URIs; see docs/configuration.md for each variable."""

    model_config = SettingsConfigDict(env_prefix="LOOPLINE_", extra="forbid")

    cache_dir: Path = Field(
        default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache") / "loopline",
        description="Heavy, rebuildable things: control-plane binaries, venvs. Keyed by version.",
    )
    state_dir: Path = Field(
        default_factory=lambda: _xdg("XDG_STATE_HOME", ".local/state") / "loopline",
        description="Runtime state of local services: the local cluster, MLflow DB, Feast data.",
    )
    mlflow_tracking_uri: str = Field(
        default="",
        description="MLflow tracking URI; empty means SQLite under state_dir/mlflow.",
    )
    log_level: str = Field(default="INFO", description="Python logging level for Loopline.")

    def resolved_mlflow_tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.state_dir / 'mlflow' / 'mlflow.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once from the environment."""
    return Settings()
