"""The ground of the settings package: where the file is, the section base class, and
the checks several sections share (a secret read from a file, a URL without a password)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

CONFIG_ENV = "MODPIPE_CONFIG"


def packaged_config() -> Path:
    """The default settings file shipped inside the installed `configs` package."""
    return Path(str(resources.files("configs").joinpath("default.yaml")))


def config_path(explicit: Path | None = None) -> Path:
    """The settings file to read: `explicit`, else $MODPIPE_CONFIG, else the packaged one."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get(CONFIG_ENV)
    return Path(from_env) if from_env else packaged_config()


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def secret_from_file(data: Any, secret: str, path_field: str) -> Any:
    """Read `secret` from the file `path_field` names (a mounted secret) unless it is set."""
    if not isinstance(data, dict) or not data.get(path_field) or data.get(secret):
        return data
    path = Path(data[path_field]).expanduser()
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read {path_field} {path}: {exc.strerror}") from None
    if not value:
        raise ValueError(f"{path_field} {path} is empty")
    return {**data, secret: value}


def no_password(url: str | None) -> str | None:
    """A Redis URL without credentials: a password in it would reach logs and config show."""
    if url is not None and urlsplit(url).password is not None:
        raise ValueError("no password in the URL: MODPIPE_REDIS__PASSWORD or redis.password_file")
    return url
