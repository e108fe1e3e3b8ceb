"""Password hashes match what ``mosquitto_passwd`` writes, byte for byte."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from devices.broker.hashing import KEY_BYTES, SALT_BYTES, hash_password, new_secret, verify_password

MOSQUITTO_PASSWD_HINT = "mosquitto_passwd is missing: apt-get install mosquitto"


def _mosquitto_passwd_hash(tmp_path: Path, username: str, secret: str) -> str:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.fail(MOSQUITTO_PASSWD_HINT, pytrace=False)
    passwd = tmp_path / "passwd"
    passwd.touch()
    subprocess.run([tool, "-b", str(passwd), username, secret], check=True, capture_output=True)
    user, _, hashed = passwd.read_text(encoding="utf-8").strip().partition(":")
    assert user == username
    return hashed


@pytest.mark.parametrize("secret", ["s3cret", new_secret(), "pâss wörd:with$odd"])
def test_hash_is_byte_identical_to_mosquitto_passwd(tmp_path: Path, secret: str) -> None:
    theirs = _mosquitto_passwd_hash(tmp_path, "dev-a", secret)
    _, scheme, iterations, salt_b64, _ = theirs.split("$")
    salt = base64.b64decode(salt_b64)

    ours = hash_password(secret, iterations=int(iterations), salt=salt)

    assert scheme == "7"
    assert ours == theirs
    assert verify_password(secret, theirs)


def test_hash_shape() -> None:
    hashed = hash_password("x")
    empty, scheme, iterations, salt_b64, key_b64 = hashed.split("$")
    assert (empty, scheme, iterations) == ("", "7", "101")
    assert len(base64.b64decode(salt_b64)) == SALT_BYTES
    assert len(base64.b64decode(key_b64)) == KEY_BYTES
    assert key_b64.endswith("==")  # standard base64 keeps its padding


def test_salt_is_random_and_iterations_are_kept() -> None:
    assert hash_password("same") != hash_password("same")
    assert hash_password("x", iterations=1000).startswith("$7$1000$")
    with pytest.raises(ValueError, match="iterations"):
        hash_password("x", iterations=0)


def test_verify_accepts_the_secret_and_nothing_else() -> None:
    secret = new_secret()
    hashed = hash_password(secret, iterations=202)
    assert verify_password(secret, hashed)
    assert not verify_password(secret + "x", hashed)
    assert not verify_password("", hashed)


@pytest.mark.parametrize(
    "hashed",
    [
        "",
        "plain",
        "$6$abc$def",
        "$7$x$AAAA$AAAA",
        "$7$0$AAAA$AAAA",
        "$7$101$!!$AAAA",
        "$7$101$AAAA",
    ],
)
def test_malformed_hash_never_verifies(hashed: str) -> None:
    assert not verify_password("anything", hashed)


def test_new_secret_is_random_url_safe_text() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(len(s) == 32 and s.replace("-", "").replace("_", "").isalnum() for s in secrets)
