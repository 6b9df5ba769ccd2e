"""Silence third-party chatter at one place, before those libraries are imported.

MLflow's telemetry tries the network (which a factory cluster often does not have) and
Great Expectations draws progress bars into logs; both are off unless the user set them.
"""

from __future__ import annotations

import os

_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "GE_USAGE_STATISTICS_URL": "",
    "TQDM_DISABLE": "1",
    "GIT_PYTHON_REFRESH": "quiet",
    "FEAST_USAGE": "False",
    "KFP_DISABLE_EXECUTION_CACHING_BY_DEFAULT": "true",
}


def apply() -> None:
    """Set quiet defaults without overriding anything the user exported."""
    for key, value in _DEFAULTS.items():
        os.environ.setdefault(key, value)
