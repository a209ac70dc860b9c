"""What every command shares: one error handler (exit codes of aimass.cli.output), one option set for
a server whether here or on Ray, one name per verb, and ``python -m aimass``."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import aimass.scale
from aimass.cli import app, commands
from aimass.cli.options import DeployOptions, ServerOptions
from aimass.cli.output import FAILURE, USER_ERROR

runner = CliRunner()


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app(), list(args))
    return result.exit_code, result.stdout, result.stderr


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def options(*path: str) -> dict[str, Any]:
    """``--name`` -> click option of the command at ``path`` (visible options only)."""
    command: Any = typer.main.get_command(app())
    for name in path:
        command = command.commands[name]
    return {
        p.opts[0]: p for p in command.params if p.param_type_name == "option" and not p.hidden and p.opts[0] != "--help"
    }


def names(group: type) -> set[str]:
    return {"--" + f.name.replace("_", "-") for f in dataclasses.fields(group)}


def test_every_command_runs_under_the_error_handler() -> None:
    found = commands(app())
    assert {"serve", "predict", "scale deploy", "scale predict", "store list", "compress"} <= {n for n, _ in found}
    unhandled = [n for n, info in found if not getattr(info.callback, "__aimass_handles_errors__", False)]
    assert unhandled == []


def test_serve_and_scale_deploy_share_the_server_options() -> None:
    serve, deploy = options("serve"), options("scale", "deploy")
    assert set(deploy) == names(ServerOptions) | names(DeployOptions)
    # uvicorn's log level and request deadlines, the gRPC port and worker processes: a server here only (Ray
    # has its own proxy and replicas)
    here = {"--log-level", "--grpc-port", "--workers", "--header-timeout", "--body-timeout"}
    assert set(serve) == names(ServerOptions) | here
    for name in names(ServerOptions):
        assert (serve[name].default, serve[name].help, serve[name].envvar) == (
            deploy[name].default,
            deploy[name].help,
            deploy[name].envvar,
        ), name


def test_one_name_per_verb() -> None:
    visible = {n for n, info in commands(app()) if not info.hidden}
    assert {"serve", "predict", "scale deploy", "scale predict"} <= visible
    assert "scale serve" not in visible
    assert "--ray" not in options("serve")


def test_serve_a_missing_model_is_a_user_error() -> None:
    code, out, err = cli("serve", "/nonexistent/aimass-model.onnx")
    assert code == USER_ERROR and out == ""
    assert one_line(err).startswith("error: ")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["scale", "deploy", "m.onnx", "--max-queue-delay", "soon"], "not a duration"),
        (["scale", "deploy", "m.onnx", "--request-timeout", "1 fortnight"], "not a duration"),
        (["scale", "deploy", "m.onnx", "--replicas", "2", "--max-replicas", "4"], "--replicas"),
        (["scale", "deploy", "m.onnx", "--min-replicas", "5", "--max-replicas", "4"], "--min-replicas"),
        (["scale", "predict", "m.onnx", "rows.csv", "out/", "--column", "x"], "INPUT=COL1"),
        (["serve", "m.onnx", "--ray"], "aimass scale deploy"),  # the former names point to the new ones
        (["scale", "serve", "m.onnx", "--replicas", "2"], "aimass scale deploy"),
    ],
)
def test_bad_values_are_user_errors_on_one_line(args: list[str], says: str) -> None:
    code, _, err = cli(*args)
    assert code == USER_ERROR
    line = one_line(err)
    assert line.startswith("error: ") and says in line


def test_scale_deploy_without_ray_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as when the [ray] extra is missing
    code, _, err = cli("scale", "deploy", "m=http://127.0.0.1:9/v2/models/m")  # a URL: bundled without loading
    assert code == FAILURE
    line = one_line(err)
    assert line.startswith("error: ") and "aimass[ray]" in line


def test_scale_deploy_hands_every_option_to_ray_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    captured: dict[str, Any] = {}

    def fake_deploy(models: dict[str, str], **kwargs: Any) -> None:
        captured.update(kwargs, models=models)
        raise RuntimeError("cluster on fire")

    monkeypatch.setattr(aimass.scale, "deploy", fake_deploy)
    code, _, err = cli(
        "scale", "deploy", "mlp.onnx", "fraud=pkg/fraud", "--min-replicas", "2", "--max-replicas", "4",
        "--upscale-delay", "10s", "--max-queue-delay", "2ms", "--instances", "3", "--max-queue-size", "8",
        "--request-timeout", "250ms", "--threads", "2", "--option", "a.b=1", "--num-cpus", "0.5",
    )  # fmt: skip
    assert code == FAILURE and one_line(err) == "failed: RuntimeError: cluster on fire"
    assert captured["models"] == {"mlp": "mlp.onnx", "fraud": "pkg/fraud"}
    assert captured["autoscaling"]["min_replicas"] == 2 and captured["autoscaling"]["max_replicas"] == 4
    assert captured["autoscaling"]["upscale_delay_s"] == 10.0
    assert captured["num_cpus"] == 0.5 and captured["model_options"] == {"a": {"b": 1}}
    settings = captured["settings"]  # each replica's ServerSettings: the flags under their own names
    assert settings.max_queue_delay == pytest.approx(0.002) and settings.instances == 3
    assert settings.max_queue_size == 8 and settings.threads == 2
    assert settings.request_timeout == pytest.approx(0.25)


def test_python_m_aimass_is_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "aimass", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Usage: aimass" in done.stdout
    for group in ("serve", "store", "scale", "predict", "compress"):
        assert group in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "aimass", "info", "/nonexistent/aimass-model.onnx"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == USER_ERROR and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
