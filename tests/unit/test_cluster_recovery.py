"""What `up` decides to do with a state directory, and what `status` says (pure)."""

from __future__ import annotations

from pathlib import Path

from loopline.cluster import commands, recovery
from loopline.cluster import state as st
from loopline.cluster.layout import Layout
from loopline.cluster.recovery import Action


def _state(names: list[str], nodes: int = 0) -> st.ClusterState:
    return st.ClusterState(
        kubernetes_version="v1.34.4",
        server="https://127.0.0.1:6443",
        ports={
            "etcd-client": 2379,
            "etcd-peer": 2380,
            "kube-apiserver": 6443,
            "kube-controller-manager": 10257,
            "kube-scheduler": 10259,
            "kwok": 10247,
        },
        nodes=nodes,
        bin_dir=Path("/bin"),
        kubeconfig=Path("/state/kubeconfig"),
        processes=[
            st.ProcessRecord(
                name=name, pid=100 + i, create_time=0.0, argv=[name], log=Path(f"/l/{name}")
            )
            for i, name in enumerate(names)
        ],
    )


CORE = ["etcd", "kube-apiserver"]
FULL = [*CORE, "kube-controller-manager", "kube-scheduler", "kwok"]


def test_an_empty_directory_starts_a_new_cluster() -> None:
    assert recovery.plan(None, {}, has_data=False).action is Action.START


def test_data_without_a_state_file_is_refused_not_deleted() -> None:
    decision = recovery.plan(None, {}, has_data=True)
    assert decision.action is Action.REFUSE
    assert "--reset" in decision.reason
    assert "no readable state.json" in decision.reason


def test_everything_alive_is_left_alone() -> None:
    decision = recovery.plan(_state(CORE), {"etcd": True, "kube-apiserver": True}, has_data=True)
    assert decision == recovery.Plan(Action.NOTHING, adopt=("etcd", "kube-apiserver"))


def test_a_dead_apiserver_is_restarted_and_a_live_etcd_adopted() -> None:
    decision = recovery.plan(_state(CORE), {"etcd": True, "kube-apiserver": False}, has_data=True)
    assert decision.action is Action.RECOVER
    assert decision.restart == ("kube-apiserver",)
    assert decision.adopt == ("etcd",)


def test_dead_processes_restart_in_start_order() -> None:
    alive = {"etcd": False, "kube-apiserver": True, "kube-controller-manager": True}
    alive |= {"kube-scheduler": False, "kwok": False}
    decision = recovery.plan(_state(FULL, nodes=1), alive, has_data=True)
    assert decision.restart == ("etcd", "kube-scheduler", "kwok")
    assert decision.adopt == ("kube-apiserver", "kube-controller-manager")


def test_all_dead_after_a_reboot_restarts_all() -> None:
    decision = recovery.plan(_state(CORE), {}, has_data=True)
    assert decision.restart == ("etcd", "kube-apiserver")
    assert decision.adopt == ()


def test_missing_files_are_named_and_nothing_is_restarted() -> None:
    decision = recovery.plan(
        _state(CORE), {"etcd": True}, has_data=True, missing=["/state/pki/sa.key"]
    )
    assert decision.action is Action.REFUSE
    assert "/state/pki/sa.key is gone" in decision.reason
    assert decision.restart == ()


def test_an_interrupted_first_up_is_refused() -> None:
    decision = recovery.plan(_state(CORE, nodes=1), {"etcd": True}, has_data=True)
    assert decision.action is Action.REFUSE
    assert "interrupted" in decision.reason


def test_ports_to_free_are_those_of_the_restarted_processes() -> None:
    state = _state(CORE)
    assert recovery.ports_to_free(state, ["kube-apiserver"]) == {6443: "kube-apiserver"}
    assert recovery.ports_to_free(state, ["etcd"]) == {2379: "etcd", 2380: "etcd"}


def test_status_names_the_dead_process_and_promises_to_keep_the_data() -> None:
    state = _state(CORE)
    decision = recovery.plan(state, {"etcd": True, "kube-apiserver": False}, has_data=True)
    message = recovery.describe(state, decision)
    assert message.startswith("kube-apiserver (pid 101) is dead.")
    assert "`loopline cluster up` restarts it with the same etcd data, CA" in message
    assert "leaves etcd running" in message
    assert "Nothing is deleted" in message
    assert "cleans up" not in message


def test_status_of_several_dead_and_of_a_running_cluster() -> None:
    state = _state(CORE)
    both = recovery.describe(state, recovery.plan(state, {}, has_data=True))
    assert both.startswith("etcd (pid 100), kube-apiserver (pid 101) are dead.")
    assert "restarts them" in both
    running = recovery.plan(state, {"etcd": True, "kube-apiserver": True}, has_data=True)
    assert recovery.describe(state, running) == ""


def test_files_needed_are_what_the_dead_command_lines_name_in_the_state_dir() -> None:
    layout = Layout(Path("/state"))
    ports = commands.Ports(2379, 2380, 6443, 10257, 10259, 10247)
    etcd = commands.etcd_command(Path("/cache/bin/etcd"), layout, ports, unsafe_no_fsync=True)
    apiserver = commands.apiserver_command(Path("/cache/bin/kube-apiserver"), layout, ports)
    needed = recovery.files_needed([etcd, apiserver], layout.root)
    assert Path("/cache/bin/etcd") in needed
    assert Path("/cache/bin/kube-apiserver") in needed
    for path in (
        layout.etcd_data_dir,
        layout.etcd_cert,
        layout.etcd_client_key,
        layout.sa_key,
        layout.sa_pub,
        layout.token_file,
        layout.serving_cert,
        layout.ca_cert,
    ):
        assert path in needed, path
    assert len(needed) == len(set(needed))
    assert not [
        p for p in needed if not (p.is_relative_to("/state") or p.parent == Path("/cache/bin"))
    ]


def test_a_cluster_recorded_with_plain_http_etcd_is_probed_as_it_runs() -> None:
    state = _state(CORE)
    state.processes[0].argv = ["etcd", "--listen-client-urls=http://127.0.0.1:2379"]
    assert recovery.etcd_scheme(state) == "http"
    state.processes[0].argv = ["etcd", "--listen-client-urls=https://127.0.0.1:2379"]
    assert recovery.etcd_scheme(state) == "https"
