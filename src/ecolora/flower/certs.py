"""Throw-away TLS certificates and SuperNode keys for a Flower deployment (tests, first trials).

``python -m ecolora.flower.certs --out certificates --host 127.0.0.1 --supernodes 2`` writes

* ``ca.crt`` (a self-signed CA), ``server.pem`` / ``server.key`` (the SuperLink's certificate for
  ``--host`` names and IPs, signed by the CA);
* ``supernode-<i>`` / ``supernode-<i>.pub``: one EC P-384 key pair per SuperNode in OpenSSH format,
  the form ``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register`` read.

For production use your organisation's CA; these keys are unencrypted and valid for 30 days.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Certificates", "generate_certificates", "generate_supernode_key"]


@dataclass(frozen=True)
class Certificates:
    """Paths of the generated files."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    supernode_keys: list[tuple[Path, Path]]  # (private, public) per SuperNode


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def _write_key(
    path: Path, key: ec.EllipticCurvePrivateKey, fmt: serialization.PrivateFormat
) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    )
    path.chmod(0o600)


def generate_supernode_key(private_path: Path, public_path: Path) -> None:
    """One EC P-384 key pair in OpenSSH format (Flower's SuperNode authentication)."""
    key = ec.generate_private_key(ec.SECP384R1())
    _write_key(private_path, key, serialization.PrivateFormat.OpenSSH)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b"\n"
    )


def generate_certificates(
    out_dir: Path,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    num_supernodes: int = 2,
    days: int = 30,
) -> Certificates:
    """Write a CA, a SuperLink server certificate for ``hosts`` and SuperNode key pairs."""
    if num_supernodes < 0:
        raise ValueError(f"num_supernodes must be >= 0, got {num_supernodes}.")
    if not hosts:
        raise ValueError("hosts must name at least one DNS name or IP address of the SuperLink.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    valid_from, valid_to = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("ecolora throw-away CA"))
        .issuer_name(_name("ecolora throw-away CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    paths = Certificates(out_dir / "ca.crt", out_dir / "server.pem", out_dir / "server.key", [])
    paths.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths.server_key, server_key, serialization.PrivateFormat.PKCS8)
    for i in range(num_supernodes):
        pair = (out_dir / f"supernode-{i}", out_dir / f"supernode-{i}.pub")
        generate_supernode_key(*pair)
        paths.supernode_keys.append(pair)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("certificates"), help="output folder")
    parser.add_argument(
        "--host",
        action="append",
        default=None,
        help="SuperLink DNS name or IP (repeat; default 127.0.0.1 and localhost)",
    )
    parser.add_argument("--supernodes", type=int, default=2, help="number of SuperNode key pairs")
    args = parser.parse_args(argv)
    paths = generate_certificates(
        args.out, tuple(args.host or ("127.0.0.1", "localhost")), args.supernodes
    )
    for path in (
        paths.ca_cert,
        paths.server_cert,
        paths.server_key,
        *[p for pair in paths.supernode_keys for p in pair],
    ):
        sys.stdout.write(f"{path}\n")


if __name__ == "__main__":
    main()
