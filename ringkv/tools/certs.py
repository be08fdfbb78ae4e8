"""`ringkv certs`: a cluster CA and the certificates of its nodes and clients.

    ringkv certs init DIR                      ca.crt, ca.key (the cluster CA)
    ringkv certs issue NAME --dir DIR          NAME.crt, NAME.key for node NAME
    ringkv certs issue NAME --client --dir DIR ... for a client called NAME

A node certificate names its node id in the subject's common name with the unit
`ringkv node` (what `ringkv.net.tls.node_identity` reads back) and is valid for both
TLS server and client use (a node dials and accepts). Its subject alternative names
hold `localhost`, 127.0.0.1 and any `--host` given, so HTTPS clients that check host
names can reach the node's client port. A client certificate has the unit
`ringkv client` and client use only: it can never pass as a node.

Keys are ECDSA P-256, written with mode 0600; the CA is valid for ten years, issued
certificates for `--days` (default 825, the longest browsers accept). Nothing is ever
overwritten: an existing file is an error, so a rotation issues into a new directory
(or after removing the old files) and is picked up by a node on SIGHUP.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ringkv.net.tls import CLIENT_UNIT, NODE_UNIT

__all__ = ["certs", "init_ca", "issue"]

CA_DAYS = 3650
DEFAULT_DAYS = 825


def _write(path: Path, data: bytes, private: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def init_ca(directory: Path, name: str = "ringkv cluster CA") -> tuple[Path, Path]:
    """Make ca.crt and ca.key in `directory` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    crt_path, key_path = directory / "ca.crt", directory / "ca.key"
    _write(key_path, _key_pem(key), private=True)
    _write(crt_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return crt_path, key_path


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("ca.key is not an ECDSA key made by `ringkv certs init`")
    return cert, key


def _san(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in ["localhost", "127.0.0.1", *hosts]:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    unique: list[x509.GeneralName] = []
    for name in names:
        if name not in unique:
            unique.append(name)
    return unique


def issue(directory: Path, name: str, *, client: bool = False, hosts: list[str] | None = None,
          days: int = DEFAULT_DAYS, out: Path | None = None,
          not_before: datetime.datetime | None = None) -> tuple[Path, Path]:
    """Issue NAME.crt and NAME.key (into `out`, default `directory`) signed by the CA
    in `directory`. `not_before` exists for tests of expired certificates."""
    ca_cert, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    unit = CLIENT_UNIT if client else NODE_UNIT
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = not_before or _now() - datetime.timedelta(minutes=5)
    usages = ([ExtendedKeyUsageOID.CLIENT_AUTH] if client
              else [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(ca_cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(start)
               .not_valid_after(start + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if not client:
        builder = builder.add_extension(x509.SubjectAlternativeName(_san(hosts or [])),
                                        critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    target = out or directory
    target.mkdir(parents=True, exist_ok=True)
    crt_path, key_path = target / f"{name}.crt", target / f"{name}.key"
    _write(key_path, _key_pem(key), private=True)
    _write(crt_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return crt_path, key_path


@click.group("certs")
def certs() -> None:
    """Make a cluster CA and issue node and client certificates (for --tls-*)."""


@certs.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init_command(directory: Path) -> None:
    """Make the cluster CA (ca.crt, ca.key) in DIRECTORY."""
    try:
        crt, key = init_ca(directory)
    except FileExistsError as exc:
        raise click.ClickException(f"{exc.filename} exists; not overwriting it") from None
    click.echo(f"{crt}\n{key}  (keep it secret: it can issue node certificates)")


@certs.command("issue")
@click.argument("name")
@click.option("--dir", "directory", default=".", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory holding ca.crt and ca.key.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write NAME.crt and NAME.key (default: --dir).")
@click.option("--client", is_flag=True, help="A client certificate (not a node's).")
@click.option("--host", "hosts", multiple=True,
              help="Another host name or IP address the node is reached by (repeatable).")
@click.option("--days", default=DEFAULT_DAYS, show_default=True, type=click.IntRange(1, 3650))
def issue_command(name: str, directory: Path, out: Path | None, client: bool,
                  hosts: tuple[str, ...], days: int) -> None:
    """Issue a certificate for node NAME (or, with --client, client NAME)."""
    from gossip.membership import valid_node_id

    if not client and not valid_node_id(name):
        raise click.ClickException(f"{name!r} is not a node id ([A-Za-z0-9_.-]{{1,64}})")
    try:
        crt, key = issue(directory, name, client=client, hosts=list(hosts), days=days,
                         out=out)
    except FileNotFoundError as exc:
        raise click.ClickException(f"{exc.filename} not found: run `ringkv certs init"
                                   f" {directory}` first") from None
    except FileExistsError as exc:
        raise click.ClickException(f"{exc.filename} exists; not overwriting it") from None
    click.echo(f"{crt}\n{key}")
