"""tests/helpers/local_slurm.py without starting anything: the slurm.conf it writes, the node line it
reads from `slurmd -C`, and its refusals (exit 2, one line, nothing written). The cluster itself
runs in the slow tests/test_slurm_cluster.py."""

from __future__ import annotations

import pathlib

import pytest

from dlmscale.errors import UserError
from helpers import local_slurm

SLURMD_C = ("NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 "
            "RealMemory=24105\nUpTime=0-00:06:47\n")


def _conf(text: str) -> dict[str, str]:
  return dict(line.split("=", 1) for line in text.splitlines()
              if line and not line.startswith("#") and not line.startswith(("NodeName=", "PartitionName=")))


def test_conf_is_the_minimal_single_node_cluster_with_every_path_inside_its_folder(tmp_path):
  node = local_slurm.node_line(SLURMD_C)
  assert node == SLURMD_C.splitlines()[0]
  text = local_slurm.slurm_conf(tmp_path, node, "vm", 7000)
  conf = _conf(text)
  assert conf["ProctrackType"] == "proctrack/linuxproc" and conf["TaskPlugin"] == "task/none"
  assert conf["SelectType"] == "select/cons_tres" and conf["SlurmUser"] == "root"
  assert conf["SlurmctldHost"] == "vm(127.0.0.1)"
  assert (conf["SlurmctldPort"], conf["SlurmdPort"]) == ("7000", "7001")
  for key in ("StateSaveLocation", "SlurmdSpoolDir", "SlurmctldPidFile", "SlurmdPidFile",
              "SlurmctldLogFile", "SlurmdLogFile"):
    assert pathlib.Path(conf[key]).is_relative_to(tmp_path), key
  assert conf["AuthInfo"].startswith(f"socket={tmp_path / 'munge' / 'munge.socket'},")
  lines = text.splitlines()
  assert f"{node} NodeAddr=127.0.0.1 State=UNKNOWN" in lines  # the host's real CPUs and memory
  assert "PartitionName=local Nodes=vm Default=YES MaxTime=INFINITE State=UP" in lines
  assert lines[0] == local_slurm.CONF_HEADER


def test_node_line_missing_is_a_user_error():
  with pytest.raises(UserError, match="NodeName"):
    local_slurm.node_line("slurmd: error: something\n")


def test_daemon_commands_use_the_folders_config_and_socket(tmp_path):
  munged = local_slurm.daemon_command(tmp_path, "munged")
  assert f"--socket={tmp_path / 'munge' / 'munge.socket'}" in munged
  assert f"--key-file={tmp_path / 'munge' / 'munge.key'}" in munged
  for daemon in ("slurmctld", "slurmd"):
    assert local_slurm.daemon_command(tmp_path, daemon)[:3] == [daemon, "-f", str(tmp_path / "slurm.conf")]


def test_read_pid_ignores_a_pid_file_of_another_process(tmp_path):
  (tmp_path / "slurmd.pid").write_text("1\n")  # pid 1 is alive but is not slurmd
  assert local_slurm.read_pid(tmp_path, "slurmd") is None
  assert local_slurm.read_pid(tmp_path, "slurmctld") is None  # no pid file at all


def test_cli_refuses_non_root_and_bad_port_before_writing(tmp_path, monkeypatch, capsys):
  root = tmp_path / "cluster"
  monkeypatch.setattr(local_slurm.os, "geteuid", lambda: 1000)
  assert local_slurm.main(["up", str(root)]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: `up` needs root") and len(err.strip().splitlines()) == 1
  monkeypatch.setattr(local_slurm.os, "geteuid", lambda: 0)
  assert local_slurm.main(["up", str(root), "--port=80"]) == 2
  assert "--port=80" in capsys.readouterr().err
  assert not root.exists()


def test_up_leaves_a_slurm_conf_it_did_not_write(tmp_path, monkeypatch):
  monkeypatch.setattr(local_slurm, "ensure_installed", lambda install: None)
  (tmp_path / "slurm.conf").write_text("ClusterName=theirs\n")
  with pytest.raises(UserError, match="not written by tests/helpers/local_slurm.py"):
    local_slurm.up(tmp_path)
  assert (tmp_path / "slurm.conf").read_text() == "ClusterName=theirs\n"
  assert [p.name for p in tmp_path.iterdir()] == ["slurm.conf"]  # nothing else written


def test_install_without_root_says_how(monkeypatch):
  monkeypatch.setattr(local_slurm, "missing_tools", lambda: ["slurmctld"])
  monkeypatch.setattr(local_slurm.os, "geteuid", lambda: 1000)
  with pytest.raises(UserError, match="sudo apt-get install slurm-wlm munge"):
    local_slurm.ensure_installed(install=True)
  with pytest.raises(UserError, match="drop --noinstall"):
    local_slurm.ensure_installed(install=False)
