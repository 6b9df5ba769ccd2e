from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from loopline.settings import Settings


def test_defaults_need_no_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    settings = Settings()
    assert settings.state_dir == tmp_path / "loopline"
    assert settings.resolved_mlflow_tracking_uri() == (
        f"sqlite:///{tmp_path / 'loopline' / 'mlflow' / 'mlflow.db'}"
    )


def test_env_prefix_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert Settings().resolved_mlflow_tracking_uri() == "http://mlflow.example:5000"


def test_unknown_setting_is_rejected() -> None:
    with pytest.raises(ValidationError, match="no_such_setting"):
        Settings(no_such_setting=1)  # type: ignore[call-arg]
