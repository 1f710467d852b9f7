"""Throw-away certificates and the loopback process helpers (no Flower process is started here)."""

from __future__ import annotations

import ipaddress
import os
import sys
import time

import pytest
import tomllib
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_ssh_private_key,
    load_ssh_public_key,
)

from ecolora.flower.certs import generate_certificates
from ecolora.flower.launch import Processes, flower_env, run_config_args, write_connection

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: flwr depends on tomli
    import tomli as tomllib


def test_certificates_chain_to_the_ca_and_cover_the_hosts(tmp_path):
    paths = generate_certificates(
        tmp_path, hosts=("127.0.0.1", "superlink.example.org"), num_supernodes=2
    )
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["superlink.example.org"]
    key = load_pem_private_key(paths.server_key.read_bytes(), None)
    assert key.public_key().public_numbers() == server.public_key().public_numbers()
    assert oct(paths.server_key.stat().st_mode & 0o777) == "0o600"
    assert len(paths.supernode_keys) == 2
    for private, public in paths.supernode_keys:  # the formats flower-supernode and flwr read
        priv, pub = (
            load_ssh_private_key(private.read_bytes(), None),
            load_ssh_public_key(public.read_bytes()),
        )
        assert isinstance(priv, ec.EllipticCurvePrivateKey) and priv.curve.name == "secp384r1"
        assert priv.public_key().public_numbers() == pub.public_numbers()
    with pytest.raises(ValueError, match="num_supernodes must be >= 0, got -1"):
        generate_certificates(tmp_path, num_supernodes=-1)


def test_run_config_arguments_and_connections(tmp_path):
    assert run_config_args({"overrides": "method=fedit;fed.rounds=2", "round-timeout": 30.0, "x": -1}) == [
        "--run-config", 'overrides="method=fedit;fed.rounds=2"', "--run-config", "round-timeout=30.0",
        "--run-config", "x=-1",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="must not contain double quotes"):
        run_config_args({"overrides": 'a="b"'})
    write_connection(tmp_path, "sim", "127.0.0.1:1234")
    write_connection(tmp_path, "tls", "127.0.0.1:5678", root_certificates=tmp_path / "ca.crt")
    config = tomllib.loads((tmp_path / "config.toml").read_text())
    assert config["superlink"]["default"] == "sim"
    assert config["superlink"]["sim"] == {"address": "127.0.0.1:1234", "insecure": True}
    assert config["superlink"]["tls"] == {
        "address": "127.0.0.1:5678",
        "root-certificates": str(tmp_path / "ca.crt"),
    }
    env = flower_env(tmp_path)
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1" and env["FLWR_HOME"] == str(
        tmp_path
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie (exited, not yet reaped) counts as gone
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_processes_stop_their_children_too(tmp_path):
    """Like flower-superlink starting flower-superexec: stopping the parent's session ends both."""
    script = "import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print(c.pid, flush=True); time.sleep(60)"  # noqa: E501
    with Processes(tmp_path, tmp_path / "home") as procs:
        parent = procs.start("parent", [sys.executable, "-c", script])
        assert parent.wait_for_log(r"^\d+\s*$", 20)
        child = int(parent.log().split()[0])
        assert _alive(parent.pid) and _alive(child)
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert parent.popen.poll() is not None and not _alive(child)
