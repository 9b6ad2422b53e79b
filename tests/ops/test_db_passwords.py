"""deploy/set-db-passwords.sh: the roles get the passwords their services use, and nothing leaks."""

from __future__ import annotations

import base64
import importlib.util
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from deployfiles import DEPLOY

SCRIPT = DEPLOY / "set-db-passwords.sh"
ROLES = ("collector", "trading_bot", "grafana_reader")

_spec = importlib.util.spec_from_file_location("db_passwords", DEPLOY / "db_passwords.py")
db_passwords = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(db_passwords)


@pytest.fixture
def env_dir(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The three env files as an operator writes them, with fresh random passwords."""
    pw = {role: secrets.token_hex(24) for role in ROLES}
    files = {
        "ig-collector.env": "IG_USERNAME=someone\n"
        f"DATABASE_URL=postgresql://collector:{pw['collector']}@127.0.0.1/igfx\n",
        "trading-bot.env": f"DATABASE_URL=postgresql://trading_bot:{pw['trading_bot']}@127.0.0.1:5432/igfx\n",
        "grafana.env": f"GRAFANA_READER_PASSWORD={pw['grafana_reader']}\nGRAFANA_PG_HOST=127.0.0.1:5432\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o600)
    return tmp_path, pw


@pytest.fixture
def role_passwords_restored(db_url: str) -> Iterator[None]:
    """Roles are cluster-wide: put their previous passwords back after the test."""
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed (Debian package postgresql-client)")
    with psycopg.connect(db_url, autocommit=True) as conn:
        query = "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)"
        before = dict(conn.execute(query, [list(ROLES)]).fetchall())
    yield
    with psycopg.connect(db_url, autocommit=True) as conn:
        for role, verifier in before.items():
            value = "NULL" if verifier is None else "'" + verifier.replace("'", "''") + "'"
            conn.execute(f"ALTER ROLE {role} PASSWORD {value}")


def run(env_dir: Path, psql: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "IGFX_PSQL": psql}
    cmd = ["bash", str(SCRIPT), str(env_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def psql_into(db_url: str) -> str:
    return f"psql -X -q -v ON_ERROR_STOP=1 -d '{db_url}'"


def stored_verifier(db_url: str, role: str) -> str:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()[0]


def verifies(verifier: str, password: str) -> bool:
    """Recompute PostgreSQL's SCRAM-SHA-256 verifier from its salt and iteration count."""
    iterations, salt = verifier.removeprefix("SCRAM-SHA-256$").split("$")[0].split(":")
    return db_passwords.scram_verifier(password, base64.b64decode(salt), int(iterations)) == verifier


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_the_password_its_service_uses(env_dir, db_url, role_passwords_restored, role) -> None:
    directory, pw = env_dir
    r = run(directory, psql_into(db_url))
    assert r.returncode == 0, r.stderr
    assert verifies(stored_verifier(db_url, role), pw[role])


def test_nothing_secret_is_echoed(env_dir, db_url, role_passwords_restored) -> None:
    directory, pw = env_dir
    r = run(directory, psql_into(db_url))
    assert not [p for p in pw.values() if p in r.stdout + r.stderr]


def test_psql_receives_verifiers_never_passwords(env_dir, db_url, role_passwords_restored, tmp_path) -> None:
    directory, pw = env_dir
    sent = tmp_path / "sent.sql"
    run(directory, f"tee {sent} | {psql_into(db_url)}")
    text = sent.read_text()
    assert text.count("PASSWORD 'SCRAM-SHA-256$") == 3
    assert not [p for p in pw.values() if p in text]


def test_statement_logging_is_off_while_passwords_are_set(env_dir) -> None:
    directory, _ = env_dir
    assert db_passwords.sql(directory).startswith("SET log_statement = 'none';")


def test_verifier_is_the_one_postgresql_computes(db_url) -> None:
    with psycopg.connect(db_url) as conn:  # one transaction, rolled back: no role survives
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute("CREATE ROLE igfx_scram_probe PASSWORD 'correct horse battery staple'")
        query = "SELECT rolpassword FROM pg_authid WHERE rolname = 'igfx_scram_probe'"
        verifier = conn.execute(query).fetchone()[0]
        conn.rollback()
    assert verifies(verifier, "correct horse battery staple")


def test_refuses_a_database_url_that_logs_in_as_another_role(env_dir, tmp_path) -> None:
    directory, pw = env_dir
    wrong_role = f"DATABASE_URL=postgresql://collector:{pw['trading_bot']}@h/igfx\n"
    (directory / "trading-bot.env").write_text(wrong_role)
    ran = tmp_path / "ran"
    r = run(directory, f"cat > {ran}")
    assert r.returncode != 0
    assert "trading-bot.env" in r.stderr and "'trading_bot'" in r.stderr
    assert not ran.exists()


def test_refuses_the_example_placeholders(tmp_path) -> None:
    for name, example in [
        ("ig-collector.env", "env.example"),
        ("trading-bot.env", "trading-bot.env.example"),
        ("grafana.env", "grafana.env.example"),
    ]:
        shutil.copy(DEPLOY / example, tmp_path / name)
    r = run(tmp_path, "cat > /dev/null")
    assert r.returncode != 0
    assert "placeholder" in r.stderr


def test_a_missing_env_file_names_the_example_to_start_from(env_dir) -> None:
    directory, _ = env_dir
    (directory / "grafana.env").unlink()
    r = run(directory, "cat > /dev/null")
    assert r.returncode != 0
    assert "grafana.env.example" in r.stderr


def test_warns_when_an_env_file_is_readable_by_others(env_dir) -> None:
    directory, _ = env_dir
    (directory / "ig-collector.env").chmod(0o644)
    r = run(directory, "cat > /dev/null")
    assert "chmod 0600" in r.stderr
