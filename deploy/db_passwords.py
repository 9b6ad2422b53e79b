"""Print the SQL that gives the database roles the passwords their services use (stdlib only).

    python3 deploy/db_passwords.py ENV_DIR | psql ...      (deploy/set-db-passwords.sh does this)

The passwords are read where the services read them, so there is one copy of each:
  collector       DATABASE_URL in ENV_DIR/ig-collector.env
  trading_bot     DATABASE_URL in ENV_DIR/trading-bot.env
  grafana_reader  GRAFANA_READER_PASSWORD in ENV_DIR/grafana.env
The SQL carries SCRAM-SHA-256 verifiers, never a password, so neither psql's input nor a server
log can leak one. Nothing is printed on error but the reason, naming the file and the setting.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import stat
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

ITERATIONS = 4096  # PostgreSQL's scram_iterations default
PLACEHOLDER = "CHANGE_ME"


class Refused(Exception):
    pass


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines as systemd's EnvironmentFile and compose's env_file read them (no expansion)."""
    if not path.is_file():
        raise Refused(f"{path} does not exist: create it from deploy/{_example_for(path.name)}")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warning = f"warning: {path} is readable by others (mode {stat.S_IMODE(mode):04o}); chmod 0600 it"
        print(warning, file=sys.stderr)
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _example_for(name: str) -> str:
    return "env.example" if name == "ig-collector.env" else f"{name}.example"


def password_from_url(path: Path, role: str) -> str:
    url = read_env_file(path).get("DATABASE_URL")
    if not url:
        raise Refused(f"{path}: DATABASE_URL is not set")
    parts = urlsplit(url)
    user = unquote(parts.username or "")
    if user != role:
        raise Refused(f"{path}: DATABASE_URL logs in as {user or 'nobody'!r}; it must use the role {role!r}")
    if not parts.password:
        raise Refused(f"{path}: DATABASE_URL has no password")
    return unquote(parts.password)


def password_from_var(path: Path, name: str) -> str:
    value = read_env_file(path).get(name, "")
    if not value:
        raise Refused(f"{path}: {name} is not set")
    return value


def check(password: str, where: str) -> str:
    if PLACEHOLDER in password:
        raise Refused(f"{where}: still the example's placeholder; set a real password (openssl rand -hex 24)")
    if len(password) < 12:
        raise Refused(f"{where}: use at least 12 characters")
    if not re.fullmatch(r"[\x21-\x7e]+", password):
        raise Refused(f"{where}: use printable ASCII without spaces (SCRAM normalises other characters)")
    return password


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The value PostgreSQL stores in pg_authid.rolpassword for this password (RFC 5802/7677)."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def passwords(env_dir: Path) -> dict[str, str]:
    collector, bot, grafana = (env_dir / n for n in ("ig-collector.env", "trading-bot.env", "grafana.env"))
    found = {
        "collector": (collector, password_from_url(collector, "collector")),
        "trading_bot": (bot, password_from_url(bot, "trading_bot")),
        "grafana_reader": (grafana, password_from_var(grafana, "GRAFANA_READER_PASSWORD")),
    }
    out = {role: check(pw, f"{path} ({role})") for role, (path, pw) in found.items()}
    if len(set(out.values())) != len(out):
        raise Refused("the three roles must have different passwords")
    return out


def sql(env_dir: Path) -> str:
    lines = ["SET log_statement = 'none';", "SET log_min_error_statement = 'panic';"]
    for role, pw in passwords(env_dir).items():
        lines.append(f"ALTER ROLE {role} WITH LOGIN PASSWORD '{scram_verifier(pw)}';")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        text = sql(Path(argv[0]))
    except Refused as e:
        print(f"set-db-passwords: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"set-db-passwords: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main(sys.argv[1:]))
