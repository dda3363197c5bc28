"""Named secrets, encrypted at rest.

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) under a key made once
per installation and stored beside the state database, readable by its user only. The database holds
only ciphertext; names and key names are not secret and are listed in clear.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import msgpack

from .._names import object_name_problem
from ..exception import InvalidError, NotFoundError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    keys TEXT NOT NULL,
    ciphertext BLOB NOT NULL
);
"""


def load_or_create_key(path: Path) -> bytes:
    from cryptography.fernet import Fernet

    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        key = Fernet.generate_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key


class Cipher:
    def __init__(self, key: bytes) -> None:
        from cryptography.fernet import Fernet

        self._fernet = Fernet(key)

    def seal(self, value: Any) -> bytes:
        return self._fernet.encrypt(msgpack.packb(value, use_bin_type=True))

    def open(self, token: bytes) -> Any:
        return msgpack.unpackb(self._fernet.decrypt(token), raw=False, strict_map_key=False)


class SecretStore:
    def __init__(self, db: Any, cipher: Cipher) -> None:
        self._db = db
        self._cipher = cipher
        db.executescript(_SCHEMA)

    def create(self, name: str, values: dict[str, str], overwrite: bool) -> None:
        why = object_name_problem(name, "Secret")
        if why is not None:
            raise InvalidError(why)
        if not values:
            raise InvalidError(f"Secret '{name}' needs at least one KEY=VALUE.")
        for k, v in values.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise InvalidError(f"Secret '{name}': keys and values must be strings (key {k!r}).")
        exists = self._db.execute("SELECT 1 FROM secrets WHERE name = ?", (name,)).fetchone()
        if exists and not overwrite:
            raise InvalidError(f"Secret '{name}' already exists; pass --force (overwrite=True) to replace it.")
        now = time.time()
        self._db.execute(
            "INSERT INTO secrets(name, created_at, updated_at, keys, ciphertext) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET updated_at = excluded.updated_at, keys = excluded.keys, "
            "ciphertext = excluded.ciphertext",
            (name, now, now, ",".join(sorted(values)), self._cipher.seal(values)),
        )

    def get(self, name: str, required_keys: list[str] | tuple[str, ...] = ()) -> dict[str, str]:
        row = self._db.execute("SELECT ciphertext FROM secrets WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(
                f"Secret '{name}' not found. Create it with `homeport secret create {name} KEY=VALUE ...`."
            )
        values = self._cipher.open(row[0])
        missing = [k for k in required_keys if k not in values]
        if missing:
            raise NotFoundError(
                f"Secret '{name}' is missing the required key(s) {', '.join(repr(k) for k in missing)}; it has: "
                f"{', '.join(sorted(values))}. Add them with `homeport secret create {name} ... --force`."
            )
        return values

    def list(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT name, created_at, updated_at, keys FROM secrets ORDER BY name").fetchall()
        return [{"name": n, "created_at": c, "updated_at": u, "keys": k.split(",") if k else []} for n, c, u, k in rows]

    def delete(self, name: str) -> None:
        cur = self._db.execute("DELETE FROM secrets WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise NotFoundError(f"Secret '{name}' not found.")
