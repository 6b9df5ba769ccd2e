"""`loopline cluster` commands that need no running cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from loopline.cli.main import cli
from loopline.cluster import commands, pki
from loopline.cluster import state as st
from loopline.cluster.layout import Layout


def test_status_of_an_empty_state_dir_is_stopped(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["cluster", "status", "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert "stopped" in result.output


def test_kubeconfig_without_a_cluster_says_how_to_start_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["cluster", "kubeconfig", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "loopline cluster up" in result.output


def test_down_without_a_cluster_is_harmless(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["cluster", "down", "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "No cluster was running" in result.output


def test_down_refuses_to_delete_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    result = CliRunner().invoke(cli, ["cluster", "down", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "refusing to delete" in result.output
    assert (tmp_path / "thesis.tex").exists()


def test_up_refuses_cluster_data_without_a_state_file_and_deletes_nothing(
    tmp_path: Path,
) -> None:
    """Without state.json `up` cannot restart what is there; it used to delete it."""
    state_dir = tmp_path / "s"
    (state_dir / "etcd" / "member").mkdir(parents=True)
    (state_dir / "pki").mkdir()
    (state_dir / "pki" / "ca.crt").write_text("the CA every kubeconfig trusts")
    args = ["--state-dir", str(state_dir)]
    status = CliRunner().invoke(cli, ["cluster", "status", *args])
    assert status.exit_code == 1
    assert "no readable state.json" in status.output
    up = CliRunner().invoke(cli, ["cluster", "up", "--no-build", *args])
    assert up.exit_code == 1
    assert "`loopline cluster up --reset` deletes it" in up.output
    assert (state_dir / "etcd" / "member").is_dir()
    assert (state_dir / "pki" / "ca.crt").read_text() == "the CA every kubeconfig trusts"


def test_status_names_each_dead_process_and_says_up_keeps_the_data(tmp_path: Path) -> None:
    state_dir = tmp_path / "s"
    layout = Layout(state_dir)
    pki.write(pki.generate(), layout)
    layout.token_file.write_text("t,loopline-admin,loopline-admin\n")
    layout.kubeconfig.write_text("{}")
    layout.etcd_data_dir.mkdir()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(gone.stdout)  # exited and reaped: nothing runs under this pid as ours
    ports = commands.Ports(2379, 2380, 6443, 10257, 10259, 10247)
    binary = Path(sys.executable)  # exists, as the real binaries would
    argvs = {
        "etcd": commands.etcd_command(binary, layout, ports, unsafe_no_fsync=True),
        "kube-apiserver": commands.apiserver_command(binary, layout, ports),
    }
    records = [
        st.ProcessRecord(name=n, pid=dead_pid, create_time=0.0, argv=argv, log=tmp_path / n)
        for n, argv in argvs.items()
    ]
    st.save(
        layout.state_file,
        st.ClusterState(
            kubernetes_version="v1.34.4",
            server="https://127.0.0.1:6443",
            ports={"etcd-client": 2379, "etcd-peer": 2380, "kube-apiserver": 6443},
            nodes=0,
            bin_dir=tmp_path,
            kubeconfig=layout.kubeconfig,
            processes=records,
        ),
    )
    args = ["--state-dir", str(state_dir)]
    status = CliRunner().invoke(cli, ["cluster", "status", *args])
    assert status.exit_code == 1
    assert status.output.startswith("stale")
    assert f"etcd (pid {dead_pid}), kube-apiserver (pid {dead_pid}) are dead." in status.output
    assert "restarts them with the same etcd data, CA" in status.output
    as_json = json.loads(CliRunner().invoke(cli, ["cluster", "status", "--json", *args]).output)
    assert as_json["dead"] == ["etcd", "kube-apiserver"]
    assert as_json["up_would"] == "recover"

    layout.sa_key.unlink()  # a restart would sign tokens with another key: refuse instead
    refused = CliRunner().invoke(cli, ["cluster", "status", *args])
    assert f"{layout.sa_key} is gone" in refused.output
    assert "--reset" in refused.output
