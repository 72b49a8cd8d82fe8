"""``modelport deploy vm``: the unit, the environment file and the cloud-init user-data.

- ``systemd-analyze verify`` accepts the unit (its ExecStart points at this repo's
  ``.venv/bin/modelport``, which exists here) and refuses broken ones; ``systemd-analyze security
  --offline=yes`` scores it below :data:`EXPOSURE_LIMIT` (measured: 1.2 "OK").
- The environment file, read back the way systemd reads it, gives ``Settings.from_env`` the
  settings asked for.
- A real server started from the unit's ExecStart words and the environment file's variables
  (loopback and port 0 in place of the VM's address and port, this test's paths in place of the
  state directory and the credential systemd would hand in) answers health and predictions with
  the API key, and refuses without it, under the kernel's MemoryDenyWriteExecute (PR_SET_MDWE).
- ``cloud-init schema`` accepts the user-data, whose write_files are exactly the unit and the
  environment file rendered.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from modelport.auth.keys import KeyFile
from modelport.cli.main import app
from modelport.errors import InvalidSetting
from modelport.reference import parse_reference
from modelport.registry.export import export_version
from modelport.registry.registry import Registry
from modelport.server.spawn import ServerOutput, stop, wait_ready
from modelport.settings import Settings
from modelport.shipping.container import DRAIN_SECONDS, PORT
from modelport.shipping.vm import VmOptions, names, vm_files
from modelport.types import ModelVersion
from tests.support.serving import register_iris

REF = "iris@production"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
CLOUD_INIT = shutil.which("cloud-init")
VENV = Path(sys.executable).parent.parent  # this repo's .venv: bin/modelport exists, so verify finds it
EXPOSURE_LIMIT = 2.0  # measured 1.2 ("OK"); systemd rates < 2 "OK", 2 to 5 "MEDIUM"
ROW = [5.9, 3.0, 5.1, 1.8]
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1  # linux/prctl.h, Linux >= 6.3

needs_cloud_init = pytest.mark.skipif(
    CLOUD_INIT is None, reason="cloud-init is not installed (scripts/setup.sh --test installs it)"
)


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> tuple[Settings, ModelVersion]:
    settings = Settings(home=tmp_path_factory.mktemp("vm") / "home")
    version, _ = register_iris(settings, iris)
    return settings, version


def render(version: ModelVersion, **options: Any) -> dict[str, str]:
    chosen: dict[str, Any] = {"venv": str(VENV), **options}
    return vm_files(version, parse_reference(REF), VmOptions(**chosen))


def unit_entries(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> every value given (systemd units may repeat keys)."""
    entries: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            entries.setdefault(f"{section}.{key}", []).append(value)
    return entries


def read_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments, blank lines, single quotes)."""
    variables = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, line
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), line
        if value.startswith("'"):
            assert len(value) >= 2, line
            assert value.endswith("'"), line
            value = value[1:-1]
        variables[key] = value
    return variables


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYSTEMD_ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60)


def exposure(path: Path) -> tuple[float, str]:
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", result.stdout)
    assert match is not None, result.stdout
    return float(match.group(1)), match.group(2)


# -- the unit -----------------------------------------------------------------------------------

MODES: dict[str, dict[str, Any]] = {
    "registry": {"database_url": "postgresql+psycopg://modelport@db.internal:5432/registry"},
    "placeholders": {},
    "export": {"export": True},
    "open-workers": {"api_keys": False, "workers": 4},
}


@pytest.mark.parametrize("mode", MODES)
def test_unit_passes_systemd_analyze_verify(
    registered: tuple[Settings, ModelVersion], tmp_path: Path, mode: str
) -> None:
    _, version = registered
    service = names(version)["service"]
    (tmp_path / service).write_text(render(version, **MODES[mode])[service])
    result = verify(tmp_path / service)
    assert result.returncode == 0, result.stderr
    assert not result.stderr.strip(), result.stderr  # not even a warning


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("ExecStart=/", "ExecStart=./"), "Neither a valid executable name nor an absolute path"),
        (("/bin/modelport serve", "/bin/no-such-modelport serve"), "no-such-modelport"),
    ],
)
def test_a_broken_unit_fails_verify(
    registered: tuple[Settings, ModelVersion], tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    _, version = registered
    service = names(version)["service"]
    text = render(version)[service]
    assert change[0] in text
    (tmp_path / service).write_text(text.replace(change[0], change[1], 1))
    result = verify(tmp_path / service)
    assert result.returncode != 0
    assert message in result.stderr


def test_unit_security_exposure_stays_low(registered: tuple[Settings, ModelVersion], tmp_path: Path) -> None:
    _, version = registered
    service = names(version)["service"]
    text = render(version)[service]
    (tmp_path / service).write_text(text)
    score, label = exposure(tmp_path / service)
    assert score < EXPOSURE_LIMIT, (score, label)
    assert label == "OK", (score, label)
    # the same unit without its sandboxing scores as systemd scores an unhardened service: the check can fail
    bare = text.split("DynamicUser=yes")[0] + "\n[Install]\nWantedBy=multi-user.target\n"
    (tmp_path / service).write_text(bare)
    assert verify(tmp_path / service).returncode == 0
    score, label = exposure(tmp_path / service)
    assert score > 8, (score, label)
    assert label in ("UNSAFE", "EXPOSED"), (score, label)


def test_unit_runs_the_venv_server_and_stops_after_the_drain(registered: tuple[Settings, ModelVersion]) -> None:
    _, version = registered
    n = names(version)
    unit = unit_entries(render(version, venv="/opt/mp/venv")[n["service"]])
    assert unit["Service.ExecStart"] == ["/opt/mp/venv/bin/modelport serve"]
    assert unit["Service.EnvironmentFile"] == [n["env_path"]]
    assert unit["Service.KillSignal"] == ["SIGTERM"]
    assert int(unit["Service.TimeoutStopSec"][0]) > DRAIN_SECONDS
    assert unit["Service.Restart"] == ["on-failure"]
    assert int(unit["Service.RestartSec"][0]) > 0
    for setting in (
        "DynamicUser",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "NoNewPrivileges",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "LockPersonality",
        "MemoryDenyWriteExecute",  # the ONNX runtime: see test_unit_command_serves_the_model
    ):
        assert unit[f"Service.{setting}"] == ["yes"], setting
    assert unit["Service.ProtectSystem"] == ["strict"]
    assert unit["Service.CapabilityBoundingSet"] == [""]
    assert unit["Service.RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert "@system-service" in unit["Service.SystemCallFilter"]
    assert unit["Service.StateDirectory"] == [n["unit"]]
    assert unit["Service.LoadCredential"] == [f"api-keys:{n['keys_source']}"]
    assert unit["Unit.ConditionPathExists"] == [n["keys_source"]]  # waits for the keys, never serves open


def test_memory_deny_write_execute_is_off_for_code_that_may_jit(registered: tuple[Settings, ModelVersion]) -> None:
    _, version = registered
    from dataclasses import replace

    custom = replace(version, runtime="python", trusted_code=True)
    unit = unit_entries(render(custom)[names(custom)["service"]])
    assert unit["Service.MemoryDenyWriteExecute"] == ["no"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"venv": "venv"}, "is not an absolute path"),
        ({"venv": "/home/me/venv"}, "ProtectHome=yes"),
        ({"venv": "/opt/my venv"}, "is not an absolute path"),
        ({"port": 0}, "is not a port"),
        ({"host": "0.0.0.0 evil"}, "is not an address"),
        ({"export": True, "database_url": "postgresql://x/y"}, "takes no registry"),
        ({"database_url": "postgresql://u:it's@h/d"}, "quote"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSetting, match=re.escape(message)):
        VmOptions(**options)


# -- the environment file -----------------------------------------------------------------------


def test_env_file_reads_back_as_the_settings_asked_for(registered: tuple[Settings, ModelVersion]) -> None:
    _, version = registered
    n = names(version)
    url = "postgresql+psycopg://modelport:p&ss w$rd@db.internal:5432/registry"  # quoted: systemd would split it
    env = read_env_file(render(version, database_url=url, artifacts="s3://models/prod")[n["env"]])
    settings = Settings.from_env(env)
    assert settings.models == (REF,)
    assert (settings.host, settings.port) == ("0.0.0.0", PORT)
    assert settings.home == Path(n["state_dir"])
    assert settings.log_format == "json"
    assert settings.database_url == url
    assert settings.artifact_location == "s3://models/prod"
    assert settings.api_keys_file == Path(n["keys_path"])
    assert not settings.insecure_open


def test_env_file_without_a_registry_leaves_placeholders(registered: tuple[Settings, ModelVersion]) -> None:
    _, version = registered
    text = render(version)[names(version)["env"]]
    assert "# MODELPORT_DATABASE_URL=postgresql+psycopg://" in text
    assert "# MODELPORT_ARTIFACTS=s3://" in text
    assert "MODELPORT_DATABASE_URL" not in read_env_file(text)


def test_export_env_file_serves_the_copied_directory_in_sagemaker_mode(
    registered: tuple[Settings, ModelVersion],
) -> None:
    _, version = registered
    n = names(version)
    env = read_env_file(render(version, export=True, workers=2)[n["env"]])
    assert "MODELPORT_MODELS" not in env  # serve with no models names falls into SageMaker mode
    settings = Settings.for_sagemaker(env)
    assert settings.sagemaker_model_dir == Path(n["model_dir"])
    assert settings.workers == 2
    assert settings.api_keys_file == Path(n["keys_path"])


def test_open_env_file_says_so_for_a_public_bind(registered: tuple[Settings, ModelVersion]) -> None:
    _, version = registered
    env_name = names(version)["env"]
    public = Settings.from_env(read_env_file(render(version, api_keys=False)[env_name]))
    assert public.insecure_open
    assert public.api_keys_file is None
    loopback = Settings.from_env(read_env_file(render(version, api_keys=False, host="127.0.0.1")[env_name]))
    assert not loopback.insecure_open  # nothing to open on loopback


# -- a real server, started the way the unit starts it ------------------------------------------


def _refuse_exec_gain() -> None:
    """The kernel's MemoryDenyWriteExecute (what recent systemd versions use where the kernel has it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


@contextmanager
def as_the_unit_runs(files: dict[str, str], version: ModelVersion, substitutes: dict[str, str]) -> Iterator[str]:
    """Run the unit's ExecStart with the environment file's variables (and ``substitutes``), as
    systemd would: a bare environment, no shell; yield the base URL once ready."""
    n = names(version)
    unit = unit_entries(files[n["service"]])
    argv = unit["Service.ExecStart"][0].split()
    assert Path(argv[0]).is_file()
    assert os.access(argv[0], os.X_OK)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "NO_COLOR": "1"}
    for assignment in unit["Service.Environment"]:
        key, _, value = assignment.partition("=")
        env[key] = value
    env |= read_env_file(files[n["env"]])
    env |= {"MODELPORT_HOST": "127.0.0.1", "MODELPORT_PORT": "0", **substitutes}
    process = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        preexec_fn=_refuse_exec_gain,
    )
    output = ServerOutput(process)
    try:
        base = f"http://127.0.0.1:{output.port(120)}"
        wait_ready(base, process, path="/v2/health/ready", timeout_s=120, output=output)
        yield base
    finally:
        code = stop(process, 15)  # systemd's KillSignal=SIGTERM
        text = output.close()
    assert code == 0, text


@pytest.mark.slow
def test_unit_command_serves_the_model_from_the_registry(
    registered: tuple[Settings, ModelVersion], tmp_path: Path
) -> None:
    settings, version = registered
    n = names(version)
    files = render(version, database_url=settings.database_url, artifacts=settings.artifact_location)
    keys = KeyFile(tmp_path / "credentials" / "api-keys")  # what LoadCredential= hands the service
    _, key = keys.create(["infer"], "vm test")
    assert read_env_file(files[n["env"]])["MODELPORT_API_KEYS_FILE"] == n["keys_path"]
    substitutes = {"MODELPORT_HOME": str(tmp_path / "state"), "MODELPORT_API_KEYS_FILE": str(keys.path)}
    with as_the_unit_runs(files, version, substitutes) as base:
        body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
        assert httpx.post(f"{base}/v2/models/iris/infer", json=body).status_code == 401
        answer = httpx.post(f"{base}/v2/models/iris/infer", json=body, headers={"X-API-Key": key})
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
        assert outputs["label"] == ["virginica"]
    assert (tmp_path / "state").is_dir()  # MODELPORT_HOME: the only place written besides /tmp


@pytest.mark.slow
def test_unit_command_serves_an_exported_model(registered: tuple[Settings, ModelVersion], tmp_path: Path) -> None:
    settings, version = registered
    files = render(version, export=True)
    model_dir = tmp_path / "opt" / "modelport" / "models" / "iris"
    with Registry.open(settings) as registry:
        export_version(version, registry.artifact_path(version), model_dir, archive=False)
    keys = KeyFile(tmp_path / "api-keys")
    _, key = keys.create(["infer"], "vm test")
    substitutes = {
        "MODELPORT_HOME": str(tmp_path / "state"),
        "MODELPORT_API_KEYS_FILE": str(keys.path),
        "MODELPORT_SAGEMAKER_MODEL_DIR": str(model_dir),
    }
    with as_the_unit_runs(files, version, substitutes) as base:
        body = {"instances": [ROW]}
        assert httpx.post(f"{base}/invocations", json=body).status_code == 401
        answer = httpx.post(f"{base}/invocations", json=body, headers={"X-API-Key": key})
        assert answer.status_code == 200, answer.text
        assert "virginica" in answer.text


@pytest.mark.slow
def test_refusing_exec_gain_really_refuses_writable_executable_memory() -> None:
    """The servers above run under PR_SET_MDWE; here is proof it bites (so their passing means something)."""
    probe = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
    plain = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0, plain.stderr
    refused = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, preexec_fn=_refuse_exec_gain
    )
    assert refused.returncode != 0
    assert "PermissionError" in refused.stderr


# -- cloud-init ---------------------------------------------------------------------------------


def schema(path: Path) -> subprocess.CompletedProcess[str]:
    assert CLOUD_INIT is not None
    return subprocess.run(
        [CLOUD_INIT, "schema", "--config-file", str(path)], capture_output=True, text=True, timeout=120
    )


@needs_cloud_init
@pytest.mark.parametrize("mode", ["registry", "export-with-keys"])
def test_user_data_is_valid_cloud_config_installing_exactly_the_rendered_files(
    registered: tuple[Settings, ModelVersion], tmp_path: Path, mode: str
) -> None:
    _, version = registered
    n = names(version)
    keys = '{"id": "k1"}\n'
    options: dict[str, Any] = (
        {"database_url": "postgresql+psycopg://modelport@db:5432/r", "artifacts": "s3://models/prod"}
        if mode == "registry"
        else {"export": True, "api_keys_text": keys}
    )
    files = render(version, modelport_spec="modelport[s3,postgres]==9.9.9", **options)
    text = files["user-data.yaml"]
    assert text.startswith("#cloud-config\n")
    (tmp_path / "user-data.yaml").write_text(text)
    result = schema(tmp_path / "user-data.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    document = yaml.safe_load(text)
    written = {f["path"]: (f["content"], f["owner"], f["permissions"]) for f in document["write_files"]}
    expected = {
        n["unit_path"]: (files[n["service"]], "root:root", "0644"),
        n["env_path"]: (files[n["env"]], "root:root", "0640"),
    }
    if mode != "registry":
        expected[n["keys_source"]] = (keys, "root:root", "0600")
    assert written == expected
    assert "python3-venv" in document["packages"]
    commands = document["runcmd"]
    assert ["python3", "-m", "venv", str(VENV)] in commands
    assert [
        f"{VENV}/bin/pip",
        "install",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "modelport[s3,postgres]==9.9.9",
    ] in commands
    assert commands[-1] == f"systemctl daemon-reload && systemctl enable --now {n['unit']}"
    if mode != "registry":
        assert ["install", "-d", "-m", "0755", n["model_dir"]] in commands


@needs_cloud_init
def test_cloud_init_schema_refuses_a_broken_user_data(tmp_path: Path) -> None:
    (tmp_path / "user-data.yaml").write_text(
        "#cloud-config\npackages: 5\nwrite_files:\n- path: /x\n  permissions: [1]\n"
    )
    result = schema(tmp_path / "user-data.yaml")
    assert result.returncode != 0
    assert "permissions" in result.stdout + result.stderr


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture
def run(registered: tuple[Settings, ModelVersion]) -> Any:
    settings, _ = registered
    runner = CliRunner()
    env = {"MODELPORT_HOME": str(settings.home), "COLUMNS": "200", "NO_COLOR": "1"}
    return lambda *args: runner.invoke(app, list(args), env=env)


def test_deploy_vm_has_help(run: Any) -> None:
    result = run("deploy", "vm", "--help")
    assert result.exit_code == 0, result.output
    assert "--modelport-spec" in result.output
    assert "--export" in result.output


def test_deploy_vm_writes_the_files_and_says_what_next(
    run: Any, registered: tuple[Settings, ModelVersion], tmp_path: Path
) -> None:
    _, version = registered
    n = names(version)
    out = tmp_path / "vm"
    result = run("deploy", "vm", REF, "--out", str(out), "--port", "9000", "--export")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted([n["service"], n["env"], "user-data.yaml", "model"])
    assert (out / "model" / "modelport.json").is_file()
    assert (out / n["env"]).stat().st_mode & 0o777 == 0o600
    assert read_env_file((out / n["env"]).read_text())["MODELPORT_PORT"] == "9000"
    assert f"systemctl enable --now {n['unit']}" in result.output
    assert f"journalctl -u {n['unit']}" in result.output
    assert "modelport keys create" in result.output  # no keys given: says how to make them
    again = run("deploy", "vm", REF, "--out", str(out), "--export", "--force")
    assert again.exit_code == 0, again.output
    assert (out / "model" / "modelport.json").is_file()


def test_deploy_vm_installs_a_given_keys_file(
    run: Any, registered: tuple[Settings, ModelVersion], tmp_path: Path
) -> None:
    _, version = registered
    n = names(version)
    keys = KeyFile(tmp_path / "keys")
    keys.create(["infer"], "vm")
    out = tmp_path / "vm"
    result = run("deploy", "vm", REF, "--out", str(out), "--api-keys-file", str(keys.path))
    assert result.exit_code == 0, result.output
    assert (out / n["keys"]).read_text() == keys.path.read_text()
    document = yaml.safe_load((out / "user-data.yaml").read_text())
    assert any(f["path"] == n["keys_source"] for f in document["write_files"])


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["iris@@"], 2, "invalid model reference"),
        (["nosuchmodel@production"], 1, "nosuchmodel"),
        ([REF, "--venv", "relative/venv"], 2, "is not an absolute path"),
        ([REF, "--registry-from-env"], 2, "SQLite file"),
        ([REF, "--export", "--registry-from-env"], 2, "contradict"),
        ([REF, "--open", "--api-keys-file", "/nonexistent/keys"], 2, "cannot read --api-keys-file"),
        ([REF, "--port", "70000"], 2, "is not a port"),
    ],
)
def test_bad_input_gives_one_line_and_a_failing_exit(
    run: Any, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    out = tmp_path / "out"
    result = run("deploy", "vm", *args, "--out", str(out))
    assert result.exit_code == code, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert message in result.output
    assert not out.exists()  # nothing written


def test_a_non_empty_out_is_refused_unless_forced(run: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    refused = run("deploy", "vm", REF, "--out", str(out))
    assert refused.exit_code == 2
    assert "--force" in refused.output
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    forced = run("deploy", "vm", REF, "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert (out / "mine.txt").read_text() == "keep me"
    assert (out / "user-data.yaml").is_file()
