"""``aimass serve`` argument parsing (the server itself runs as a subprocess in tests/backends/test_remote.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import models
import pytest
import typer
from typer.testing import CliRunner

from aimass.cli import COMMANDS
from aimass.cli.options import parse_duration, parse_size


def test_serve_is_registered() -> None:
    assert "aimass.cli.serve" in COMMANDS


@pytest.mark.parametrize(
    ("text", "seconds"), [("0", 0.0), ("500us", 0.0005), ("2ms", 0.002), ("0.01", 0.01), ("1s", 1.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "size"), [("64MiB", 64 << 20), ("10MB", 10_000_000), ("4096", 4096), ("1kib", 1024)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["soon", "-1ms", "5 parsecs"])
def test_bad_values_are_refused(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_duration(text)
    with pytest.raises(typer.BadParameter):
        parse_size(text)


def test_limits_reach_the_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import aimass.server as server
    from aimass.cli import app

    pytest.importorskip("onnxruntime")
    captured: dict[str, Any] = {}
    real_create_app = server.create_app

    def spy(*args: Any, **kwargs: Any) -> Any:
        captured.update(kwargs)
        return real_create_app(*args, **kwargs)

    monkeypatch.setattr(server, "create_app", spy)
    monkeypatch.setattr(server, "serve", lambda *a, **k: None)  # parse and build, do not listen
    model = models.onnx_mlp(tmp_path / "mlp.onnx")
    args = [
        "serve",
        str(model),
        "--port",
        "0",
        "--max-queue-size",
        "8",
        "--request-timeout",
        "250ms",
        "--max-elements",
        "1000",
    ]
    result = CliRunner().invoke(app(), args)
    assert result.exit_code == 0, result.output
    settings = captured["settings"]
    assert settings.max_queue_size == 8
    assert settings.request_timeout == pytest.approx(0.25)
    assert settings.max_elements == 1000


# A value other than the default for every ServerOptions flag (a new flag must be added here).
FLAG_VALUES: dict[str, Any] = {
    "host": "0.0.0.0",
    "port": 9001,
    "max_batch_size": 8,
    "max_batch_tokens": 512,
    "max_queue_delay": "2ms",
    "instances": 3,
    "call_threads": 1,
    "auth_token": "s3cret",
    "max_body_size": "1MiB",
    "threads": 3,
    "max_queue_size": 5,
    "request_timeout": "250ms",
    "max_elements": 1000,
    "max_loaded_models": 2,
    "memory_budget": "1GiB",
    "pin": ["fraud"],
    "warmup": False,
    "monitor": "off",
    "log_payloads": "logs",
    "log_sample_rate": 0.5,
    "log_max_queue_bytes": "1MiB",
    "log_max_bytes": "2MiB",
    "log_max_age": "1h",
    "trace": True,
    "shadow": ["fraud@production=4:0.2"],
    "shadow_max_in_flight": 2,
    "shadow_max_bytes": "1MiB",
    "policies": str(Path(__file__).parents[2] / "examples" / "policies.yaml"),
    "dashboard": False,
    "allowed_hosts": "api.example.com",
    "allowed_origins": "https://ui.example.com",
}
# aimass serve's own flags (not shared with scale deploy), also settings of the same name.
SERVE_VALUES: dict[str, Any] = {
    "log_level": "info",
    "grpc_port": 9002,
    "workers": 2,
    "header_timeout": "5s",
    "body_timeout": "30s",
}


def _command(*path: str) -> Any:
    from aimass.cli import app

    command: Any = typer.main.get_command(app())
    for name in path:
        command = command.commands[name]
    return command


@pytest.mark.parametrize("path", [("serve",), ("scale", "deploy")])
def test_every_server_flag_is_the_setting_of_its_name(path: tuple[str, ...]) -> None:
    from aimass.cli.options import MODEL_FLAGS, DeployOptions
    from aimass.server import ServerSettings

    not_settings = {"sources", "ray", *MODEL_FLAGS, *(f.name for f in dataclasses.fields(DeployOptions))}
    flags = {p.name: p.opts for p in _command(*path).params if p.name not in not_settings}
    assert flags, path
    for name, opts in flags.items():
        assert name in ServerSettings.model_fields, f"--{name} is no ServerSettings field"
        assert f"--{name.replace('_', '-')}" in opts, (name, opts)  # the flag is spelled as the field
    if path == ("serve",):
        assert set(flags) == set(FLAG_VALUES) | set(SERVE_VALUES)


@pytest.mark.parametrize("name", sorted(FLAG_VALUES) + sorted(SERVE_VALUES))
def test_each_flag_sets_only_the_setting_of_its_name(name: str) -> None:
    from aimass.cli.options import MODEL_FLAGS, ServerOptions

    assert set(FLAG_VALUES) == {f.name for f in dataclasses.fields(ServerOptions)} - set(MODEL_FLAGS)
    if name in FLAG_VALUES:
        changed, default = ServerOptions(**{name: FLAG_VALUES[name]}).settings(), ServerOptions().settings()
    else:
        changed, default = ServerOptions().settings(**{name: SERVE_VALUES[name]}), ServerOptions().settings()
    differ = {f for f in type(default).model_fields if getattr(changed, f) != getattr(default, f)}
    # Listening beyond loopback drops the loopback-only Host default (aimass.server.browser.allowed_hosts_for).
    assert differ == ({"host", "allowed_hosts"} if name == "host" else {name})


def test_a_bad_flag_value_names_its_flag() -> None:
    from aimass.cli.options import ServerOptions

    with pytest.raises(typer.BadParameter, match="is not a duration") as info:
        ServerOptions(max_queue_delay="soon").settings()
    assert info.value.param_hint == "'--max-queue-delay'"
    with pytest.raises(typer.BadParameter, match="MODEL@ALIAS=VERSION") as info:
        ServerOptions(shadow=["fraud"]).settings()
    assert info.value.param_hint == "'--shadow'"
