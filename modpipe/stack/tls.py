"""Secrets of the secure local stack: a CA, a server certificate, passwords, SCRAM data.

Made once, at the first `stack up --secure`, under `stack.home/secure` (mode 0700, every
file 0600). The CA and the server certificate come from `openssl`; the server
certificate names 127.0.0.1 and localhost, which is where the stack listens. Passwords
are random and never appear on a command line: Kafka reads its keystore password from
server.properties, Redis its password from a config file, and the SCRAM user is given
to Kafka's storage format as a salted password, not the password itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from modpipe.core.errors import StackError

SCRAM_ITERATIONS = 8192


@dataclass(frozen=True, slots=True)
class SecureFiles:
    """Where the secure stack's CA, server key material and passwords are kept."""

    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    @property
    def keystore(self) -> Path:
        return self.folder / "server.p12"

    @property
    def kafka_password(self) -> Path:
        """The SCRAM password of the local modpipe user (kafka.sasl_password_file)."""
        return self.folder / "kafka.password"

    @property
    def redis_password(self) -> Path:
        """The Redis password (redis.password_file)."""
        return self.folder / "redis.password"

    @property
    def credentials(self) -> Path:
        """Everything a client needs, in one 0600 JSON file (`stack status --json` names it)."""
        return self.folder / "credentials.json"

    @property
    def _keystore_password(self) -> Path:
        return self.folder / "keystore.password"

    def keystore_password(self) -> str:
        return self._keystore_password.read_text().strip()


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StackError(f"openssl {args[0]} failed: {proc.stderr.strip()[-500:]}")


def ensure_secure_files(home: Path, username: str) -> SecureFiles:
    """The secure stack's files, made on first use (an existing CA is kept)."""
    files = SecureFiles(home / "secure")
    if files.credentials.exists():
        return files
    if shutil.which("openssl") is None:
        raise StackError("openssl is needed to make the local CA; apt-get install openssl")
    folder = files.folder
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    old = os.umask(0o077)  # the keys openssl writes are private too
    try:
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "825",
            "-subj", "/CN=modpipe local CA", "-keyout", "ca.key", "-out", "ca.pem",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=folder,
        )  # fmt: skip
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr",
            cwd=folder,
        )  # fmt: skip
        (folder / "server.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
        )
        _openssl(
            "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "825", "-out", "server.pem", "-extfile", "server.ext",
            cwd=folder,
        )  # fmt: skip
        _write_secret(files._keystore_password, secrets.token_urlsafe(24))
        _openssl(
            "pkcs12", "-export", "-in", "server.pem", "-inkey", "server.key",
            "-certfile", "ca.pem", "-name", "broker", "-out", "server.p12",
            "-passout", f"file:{files._keystore_password}",
            cwd=folder,
        )  # fmt: skip
    finally:
        os.umask(old)
    _write_secret(files.kafka_password, secrets.token_urlsafe(24))
    _write_secret(files.redis_password, secrets.token_urlsafe(24))
    _write_secret(
        files.credentials,
        json.dumps(
            {
                "kafka_sasl_mechanism": "SCRAM-SHA-512",
                "kafka_sasl_username": username,
                "kafka_sasl_password": files.kafka_password.read_text(),
                "redis_password": files.redis_password.read_text(),
                "ca_file": str(files.ca_cert),
            },
            indent=2,
        ),
    )
    for leftover in ("server.csr", "server.ext", "ca.srl"):
        (folder / leftover).unlink(missing_ok=True)
    return files


def scram_argument(username: str, password: str) -> str:
    """`--add-scram` for Kafka's storage format, with the salted password (RFC 5802)."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, SCRAM_ITERATIONS)
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-512=[name={username},iterations={SCRAM_ITERATIONS},"
        f'salt="{b64(salt).decode()}",saltedpassword="{b64(salted).decode()}"]'
    )
