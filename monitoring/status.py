"""The drift monitor's `GET /v1/status` body, built from a running monitor: what the operator
reads for the Model's Drifted condition and what an engineer reads when asking "why"."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from loopline.types.monitor import MonitorReference, MonitorStatus, MonitorWindow

from .decision import CONFIRMED

if TYPE_CHECKING:
    from .service import DriftMonitor


def status_of(m: DriftMonitor) -> MonitorStatus:
    now = m.clock()
    s = m.state
    ref = m.reference
    return MonitorStatus(
        model=m.model,
        namespace=m.settings.namespace,
        detector=m.settings.detector,
        p_value=m.settings.p_value,
        correction=m.settings.correction,
        reference=None
        if ref is None
        else MonitorReference(
            version=ref.version, rows=int(ref.values.shape[0]), source=ref.source
        ),
        features=m.feature_names,
        window=MonitorWindow(
            size=m.window.size,
            step=m.window.step,
            rows=int(m.window.rows.shape[0]),
            since_test=m.window.since_test,
            rows_seen=m.window.rows_seen,
        ),
        queue_rows=len(m.queue),
        received=m.received,
        dropped=m.dropped,
        anomaly_rate=m.anomaly_rate(),
        decision=s.decision,
        windows_tested=s.windows_tested,
        drifted_windows=s.drifted_windows,
        consecutive=s.consecutive,
        consecutive_required=m.policy.consecutive_windows,
        stable_consecutive=s.stable_consecutive,
        drift_confirmed=s.decision in CONFIRMED,
        retrain_on_drift=m.policy.retrain_on_drift,
        cooldown_remaining_seconds=s.cooldown_remaining(now),
        cooldown_until=datetime.fromtimestamp(s.cooldown_until, UTC).isoformat()
        if s.cooldown_until
        else None,
        requests=s.requests,
        last_request=s.last_request,
        pending_request=s.pending_request,
        last_p_values=s.last_p_values,
        last_statistics=s.last_statistics,
        last_drifted=s.last_drifted,
        last_window_end=s.last_window_end or None,
        last_error=m.last_error or None,
        idle=m.idle(),
    )
