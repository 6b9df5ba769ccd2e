"""The closed-loop scenario: what `loopline demo` runs and what the e2e test asserts on.

Acts, each a method, each logging a step with the kubectl command that shows the same thing:

1. the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok);
2. MLflow's UI on a free loopback port over the demo's SQLite store;
3. plant history from the data generator, as a Feast repository;
4. the operator (`loopline operator run`) with local backends, as a child process;
5. `manifests/examples`' Pipeline and the `drill-ae` Model, applied with kubectl;
6. wait for the first champion to serve; the simulated plant starts sending rows (REST and
   gRPC) and landing them in the offline store;
7. baseline traffic, then a recipe change; the monitor raises a retraining request on the
   Model, the operator runs the pipeline (trigger drift), the gate, the canary, the promotion;
8. both versions scored on the same fresh post-change data;
9. a non-core sensor dies and the fallback answers.

Whatever was started is recorded (`DemoProcesses`) and stopped at the end unless `keep`.
A piece of Loopline that is not in the tree, or a stage that never completes, ends the run
early with a note that names it; the report is still written with what was measured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from loopline.cluster.errors import ClusterError
from loopline.demo.acts import DemoActs, loop_failure
from loopline.demo.cluster_stack import ClusterStack
from loopline.demo.errors import BrokenPiece, MissingPiece, ModelFailed
from loopline.demo.manifests import demo_model, demo_pipeline, load_examples
from loopline.demo.record import DemoRecord
from loopline.demo.report import write_report
from loopline.types.common import registered_model_name
from loopline.wait import WaitTimeout

log = logging.getLogger(__name__)

# The pieces tests and the CLI reach for, from the module that runs the scenario.
__all__ = [
    "ClusterDemo",
    "Demo",
    "DemoResult",
    "MissingPiece",
    "demo_model",
    "demo_pipeline",
    "load_examples",
    "loop_failure",
]


@dataclass
class DemoResult:
    """What a run showed; the e2e test asserts the story on it."""

    record: DemoRecord
    state_dir: Path
    demo_id: str
    report: Path | None = None
    completed: bool = False
    problems: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # pieces not in the tree
    leftovers: list[int] = field(default_factory=list)
    kubeconfig: Path | None = None
    tracking_uri: str = ""
    model_uri_name: str = ""

    @property
    def first_champion(self) -> str | None:
        m = self.record.first_marker("serving")
        return m.label.removeprefix("version ") if m else None

    @property
    def drift_runs(self) -> list[str]:
        return [r.run_id for r in self.record.runs.values() if r.trigger == "drift"]


class Demo(DemoActs):
    """One run of the scenario. `run()` never leaves processes behind unless `keep`."""

    # -- the whole run ---------------------------------------------------------------------

    def run(self) -> DemoResult:
        result = DemoResult(
            record=self.record,
            state_dir=self.state_dir,
            demo_id=self.processes.demo_id,
            tracking_uri=self.tracking_uri,
            model_uri_name=registered_model_name(self.s.namespace, self.s.model),
        )
        try:
            self.stop_previous()
            result.demo_id = self.processes.demo_id
            self.start_cluster()
            result.kubeconfig = self.kubeconfig
            self.start_mlflow()
            result.tracking_uri = self.tracking_uri  # the cluster mode's is known only now
            self.prepare_data()
            self.start_operator()
            self.apply_examples()
            self.wait_first_champion()
            self.mlflow_ready()
            self.start_traffic()
            self.act_recipe_change()
            self.compare_versions()
            self.act_dead_sensor()
            result.completed = True
        except MissingPiece as exc:
            result.missing.append(str(exc))
            result.problems.append(str(exc))
            self.record.note(str(exc))
            self.record.step("Stopped early: a piece is missing", detail=str(exc))
            log.warning("demo stopped early: %s", exc)
        except (BrokenPiece, WaitTimeout, ModelFailed, ClusterError) as exc:
            result.problems.append(str(exc))
            self.record.note(str(exc))
            self.record.step("Stopped early", detail=str(exc).splitlines()[0])
            log.warning("demo stopped early: %s", exc)
        finally:
            self.shutdown(result)
        return result

    def shutdown(self, result: DemoResult) -> None:
        """Stop traffic and watching, write the report, then (unless keep) stop everything."""
        if self.plant is not None:
            self.plant.stop()
        if self.historian is not None:
            self.historian.stop()  # after fetching the answers still outstanding
        self.read_usage()  # after the last answer, before the model server stops
        if self.watcher is not None:
            self.watcher.poll()
            self.watcher.stop()
        self.read_history()  # before the cluster stops
        self.record.finish()
        if not self.keep:
            self.processes.stop_all()
            result.leftovers = self.processes.leftovers()
        if self.api is not None:
            self.api.close()
        if self.write_report:
            result.report = write_report(self.record, self.s.resolved_report_dir())


class ClusterDemo(ClusterStack, Demo):
    """The same run on the real containerd node (`loopline demo --cluster`): the acts and the
    report are `Demo`'s, the stack is pods (`loopline.demo.cluster_stack`)."""
