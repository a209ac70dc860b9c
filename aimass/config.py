"""Local/remote swap by configuration: which model a name means is decided by env vars and a file.

Application code asks for a model by name and never says where it lives::

    model = Model.from_config("fraud")

and deployment decides. Sources, strongest first:

1. env vars for that name: ``AIMASS_FRAUD_URI`` (also ``_DEVICE``, ``_BACKEND``, ``_TIMEOUT``, ``_AUTH_TOKEN``);
2. the config file: ``AIMASS_CONFIG`` or the first of ``aimass.toml``, ``aimass.yaml``, ``aimass.yml``
   in the working directory, with a table per model::

       [models.fraud]
       uri = "models/fraud.onnx"          # or "http://mass:8000/v2/models/fraud"
       device = "cpu"
       timeout = 2.0
       [models.fraud.options]             # passed to the backend
       retries = 5

3. ``AIMASS_MODEL_URI`` (and ``AIMASS_MODEL_DEVICE`` ...): the default for a process that serves one model.

The bearer token of a remote model is ``auth_token`` (``AIMASS_FRAUD_AUTH_TOKEN`` or the file), else
the client-wide env var ``AIMASS_CLIENT_TOKEN``, sent to the URL configured here. It is a client
setting, separate from the token ``aimass serve`` requires (``AIMASS_SERVER_TOKEN``). A ``uri`` that
is a saved remote package gets no configured token: the package chose that URL, not the
configuration (see :mod:`aimass.backends.remote` for ``AIMASS_CLIENT_TOKEN_HOSTS``).

Example:
    >>> cfg = ModelConfig(uri="http://mass:8000/v2/models/fraud", timeout=2.0)
    >>> cfg.is_remote
    True
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aimass.dependencies import require
from aimass.errors import ModelLoadError, ModelNotFound
from aimass.files import read_text

if TYPE_CHECKING:
    from aimass.model import Model

__all__ = ["CONFIG_FILES", "ModelConfig", "load_config", "model_config"]

CONFIG_FILES = ("aimass.toml", "aimass.yaml", "aimass.yml")
_FIELDS = ("uri", "device", "backend", "timeout", "auth_token")


class ModelConfig(BaseModel):
    """Where one model lives and how to open it.

    Example:
        >>> ModelConfig(uri="models/fraud.onnx").load()   # doctest: +SKIP
    """

    model_config = ConfigDict(extra="forbid")

    uri: str
    device: str = "cpu"
    backend: str | None = None
    timeout: float | None = Field(default=None, gt=0, description="seconds, remote models only")
    auth_token: str | None = Field(
        default=None, repr=False, description="client bearer token, sent only to this remote uri"
    )
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_remote(self) -> bool:
        """Whether ``uri`` names a model server (``http(s)://``, ``grpc(s)://``): ``timeout``, ``auth_token`` apply."""
        from aimass.backends import served_remotely

        return served_remotely(self.uri)

    def load(self, name: str | None = None) -> Model:
        """Open the model this config describes (local file/package or remote URL)."""
        from aimass.model import Model

        options = dict(self.options)
        if self.is_remote:
            if self.timeout is not None:
                options.setdefault("timeout", self.timeout)
            if self.auth_token is not None:
                options.setdefault("auth_token", self.auth_token)
        model = Model.load(self.uri, backend=self.backend, device=self.device, options=options or None)
        if name is not None:
            model.name = name
        return model


def _env_key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _from_env(prefix: str, env: Mapping[str, str]) -> dict[str, Any]:
    return {f: env[f"{prefix}_{f.upper()}"] for f in _FIELDS if f"{prefix}_{f.upper()}" in env}


def _config_file(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    if path is not None:
        return Path(path)
    if env.get("AIMASS_CONFIG"):
        return Path(env["AIMASS_CONFIG"])
    return next((Path(p) for p in CONFIG_FILES if Path(p).is_file()), None)


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The parsed config file (``{}`` when there is none): explicit ``path``, ``AIMASS_CONFIG``, or ./aimass.toml|yaml.

    Example:
        >>> load_config("aimass.toml")["models"]["fraud"]["uri"]   # doctest: +SKIP
    """
    file = _config_file(path, os.environ if env is None else env)
    if file is None:
        return {}
    text = read_text(file, ModelLoadError, where=f"config file {str(file)!r}")
    is_yaml = file.suffix in (".yaml", ".yml")
    # Only YAML users need PyYAML; asked for before parsing, so that its absence is not "not valid YAML".
    yaml = require("yaml", feature="a YAML config file", extra="server", package="pyyaml") if is_yaml else None
    try:
        doc = (yaml.safe_load(text) or {}) if yaml is not None else tomllib.loads(text)
    except Exception as e:  # tomllib and yaml raise their own parse errors
        raise ModelLoadError(f"config file {str(file)!r} is not valid {file.suffix[1:].upper()}: {e}") from None
    if not isinstance(doc, dict):
        raise ModelLoadError(f"config file {str(file)!r} must hold a table/mapping at the top")
    return doc


def model_config(
    name: str | None = None, *, path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> ModelConfig:
    """The :class:`ModelConfig` for ``name`` from env vars and the config file (see the module docs).

    Example:
        >>> model_config("fraud", env={"AIMASS_FRAUD_URI": "http://mass:8000/v2/models/fraud"}).uri
        'http://mass:8000/v2/models/fraud'
    """
    env = os.environ if env is None else env
    fields: dict[str, Any] = {}
    source = "AIMASS_MODEL_*"
    origin = ""  # the config file, when the fields came from it
    where = ""
    if name is not None:
        file = _config_file(path, env)
        where = f"config file {file.name!r}" if file is not None else "config file"
        table = load_config(path, env).get("models") or {}
        if not isinstance(table, dict):
            raise ModelLoadError(f"{where}: 'models' must be a table, got {type(table).__name__}")
        entry = table.get(name)
        if entry is not None:
            if not isinstance(entry, dict):
                raise ModelLoadError(f"{where}: entry models.{name} must be a table, got {type(entry).__name__}")
            fields, source = dict(entry), f"[models.{name}]"
            origin = f" ({where})"
        named = _from_env(f"AIMASS_{_env_key(name)}", env)
        if named:
            fields.update(named)
            source, origin = f"AIMASS_{_env_key(name)}_*", ""
    if "uri" not in fields:
        fields = {**_from_env("AIMASS_MODEL", env), **fields}
    if "uri" not in fields:
        what = f"model {name!r}" if name else "the default model"
        hint = f"AIMASS_{_env_key(name)}_URI, a [models.{name}] table in aimass.toml, or " if name else ""
        seen = f" ({where} has none)" if where.startswith("config file '") else ""
        raise ModelNotFound(f"no configuration for {what}: set {hint}AIMASS_MODEL_URI{seen}")
    try:
        return ModelConfig.model_validate(fields)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        what = f"config for {name or 'the default model'} ({source})"
        raise ModelLoadError(f"{what}: {loc}: {err['msg']}{origin}") from None
