"""Files that serve a registered model on a Linux host under systemd: a hardened unit, its
environment file, and cloud-init user-data that installs both on a fresh Debian/Ubuntu instance.

Pure functions from a :class:`~modelport.types.ModelVersion` and :class:`VmOptions` to file texts
(:func:`vm_files`); writing is :func:`modelport.shipping.kubernetes.write_files`. The unit runs
``VENV/bin/modelport serve`` with no arguments, so everything the server needs is in the
environment file and is read by ``Settings.from_env``:

- *registry* (the default): ``MODELPORT_MODELS=REF`` from a shared registry
  (``MODELPORT_DATABASE_URL`` on PostgreSQL, ``MODELPORT_ARTIFACTS`` on S3); alias moves reach the
  VM as they reach every other server.
- *export*: the files of ``modelport export`` copied to :func:`names` ``model_dir`` on the host and
  served in SageMaker mode (``MODELPORT_SAGEMAKER_MODEL_DIR``, no ``MODELPORT_MODELS``), pinned to
  the version exported. The unit waits for the copy (``ConditionPathExists``).

docs/vm.md explains every setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from modelport.errors import InvalidSetting
from modelport.reference import Reference
from modelport.registry.export import RECORD
from modelport.settings import LOOPBACK_HOSTS
from modelport.shipping import container
from modelport.shipping.container import DRAIN_SECONDS, slug
from modelport.shipping.yamlfiles import dump
from modelport.types import ModelVersion
from modelport.version import __version__

VENV = "/opt/modelport/venv"  # where the user-data creates the virtual environment
CONFIG_DIR = "/etc/modelport"  # environment files and API keys files, root-owned
MODELS_DIR = "/opt/modelport/models"  # exported model directories (--export), one per model
DEFAULT_SPEC = f"modelport[s3,postgres]=={__version__}"
STOP_SECONDS = DRAIN_SECONDS + 15  # systemd sends SIGKILL after this: longer than the server's drain
RESTART_SECONDS = 5
USER_DATA_LIMIT = 16 * 1024  # EC2 refuses user-data larger than 16 KB
# Runtimes whose libraries generate no machine code at run time (ONNX Runtime's CPU provider, NumPy,
# SciPy, scikit-learn): MemoryDenyWriteExecute is safe for them, and tests/shipping/test_deploy_vm.py serves
# the ONNX model under the kernel's equivalent. Custom Python code may bring a JIT (PyTorch's oneDNN).
NO_JIT_RUNTIMES = frozenset({"onnx", "sklearn"})
# Paths ProtectHome=yes hides from the service: a virtual environment there could not be run.
_HIDDEN = ("/home", "/root", "/run/user")
_PLAIN = re.compile(r"[A-Za-z0-9_./:@%+,=\-\[\]]*")  # written unquoted in the environment file


@dataclass(frozen=True, slots=True)
class VmOptions:
    """What ``modelport deploy vm`` takes; the constructor refuses values the host would refuse.

    host / port: what the server binds (``MODELPORT_HOST`` / ``MODELPORT_PORT``). venv: the
    virtual environment on the host whose ``bin/modelport`` the unit runs. modelport_spec: what the
    user-data installs into it. database_url / artifacts: the shared registry (None: a commented
    placeholder). export: serve a model directory copied to the host instead of the registry.
    api_keys: require API keys from :func:`names` ``keys_source`` (False: ``--open``).
    api_keys_text: the keys file (hashes only) to install with the user-data, if known.
    workers: server processes sharing the port.
    """

    host: str = "0.0.0.0"
    port: int = container.PORT
    venv: str = VENV
    modelport_spec: str = DEFAULT_SPEC
    database_url: str | None = None
    artifacts: str | None = None
    export: bool = False
    api_keys: bool = True
    api_keys_text: str | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host):
            raise InvalidSetting(f"--host {self.host!r} is not an address to bind (e.g. 0.0.0.0 or 127.0.0.1)")
        if not 1 <= self.port <= 65535:
            raise InvalidSetting(f"--port {self.port} is not a port: give 1 to 65535")
        if not self.venv.startswith("/") or not _PLAIN.fullmatch(self.venv) or "//" in self.venv:
            raise InvalidSetting(
                f"--venv {self.venv!r} is not an absolute path without spaces or quotes (e.g. {VENV}): "
                "systemd runs the unit's ExecStart by absolute path"
            )
        if any(self.venv == hidden or self.venv.startswith(hidden + "/") for hidden in _HIDDEN):
            raise InvalidSetting(
                f"--venv {self.venv} is under {', '.join(_HIDDEN)}, which the unit hides (ProtectHome=yes): "
                f"put the virtual environment elsewhere, e.g. {VENV}"
            )
        if not self.modelport_spec.strip() or "\n" in self.modelport_spec:
            raise InvalidSetting(f"--modelport-spec {self.modelport_spec!r} is not a pip requirement")
        if self.workers < 1:
            raise InvalidSetting(f"--workers {self.workers}: give 1 or more")
        if self.export and (self.database_url or self.artifacts):
            raise InvalidSetting("--export serves a copied model directory: it takes no registry (database, artifacts)")
        if self.api_keys_text is not None and not self.api_keys:
            raise InvalidSetting("--api-keys-file and --open contradict each other: give one")
        for what, value in (("database URL", self.database_url), ("artifacts", self.artifacts)):
            if value is not None:
                _env_value(what, value)  # refused here if the environment file cannot hold it

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS


def names(version: ModelVersion) -> dict[str, str]:
    """Every name the files use: unit, environment file, keys, directories on the host."""
    unit = f"modelport-{slug(version.name)}"
    return {
        "unit": unit,
        "service": f"{unit}.service",
        "env": f"{unit}.env",
        "keys": f"{unit}.keys",
        "unit_path": f"/etc/systemd/system/{unit}.service",
        "env_path": f"{CONFIG_DIR}/{unit}.env",
        "keys_source": f"{CONFIG_DIR}/{unit}.keys",
        # LoadCredential= copies keys_source here, readable by the service's user only
        "keys_path": f"/run/credentials/{unit}.service/api-keys",
        "state_dir": f"/var/lib/{unit}",
        "model_dir": f"{MODELS_DIR}/{slug(version.name)}",
    }


def memory_deny_write_execute(version: ModelVersion) -> bool:
    """Whether the unit sets MemoryDenyWriteExecute=yes: only for runtimes known to need no JIT."""
    return version.runtime in NO_JIT_RUNTIMES and not version.trusted_code


def unit_file(version: ModelVersion, reference: Reference, options: VmOptions) -> str:
    """The systemd unit ``modelport-NAME.service``."""
    n = names(version)
    serving = f"{n['model_dir']} (exported {version.ref})" if options.export else str(reference)
    conditions = []
    if options.api_keys:
        conditions.append(f"ConditionPathExists={n['keys_source']}")
    if options.export:
        conditions.append(f"ConditionPathExists={n['model_dir']}/{RECORD}")
    command = f"{options.venv}/bin/modelport serve"
    if options.workers > 1 and not options.export:  # SageMaker mode takes SAGEMAKER_MODEL_SERVER_WORKERS
        command += f" --workers {options.workers}"
    credential = [f"LoadCredential=api-keys:{n['keys_source']}"] if options.api_keys else []
    mdwe = memory_deny_write_execute(version)
    lines = [
        f"# {n['service']}: serves {serving} (modelport deploy vm, modelport {__version__}).",
        f"# Install as {n['unit_path']}; settings in {n['env_path']}. See docs/vm.md.",
        "[Unit]",
        f"Description=modelport serving {serving}",
        "Wants=network-online.target",
        "After=network-online.target",
        # a unit that keeps failing (bad settings, registry unreachable) stops after 5 tries in 5 min
        "StartLimitIntervalSec=300",
        "StartLimitBurst=5",
        *conditions,
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={command}",
        f"EnvironmentFile={n['env_path']}",
        "Environment=PYTHONUNBUFFERED=1",
        *credential,
        f"SyslogIdentifier={n['unit']}",
        "Restart=on-failure",
        f"RestartSec={RESTART_SECONDS}",
        "KillSignal=SIGTERM",
        f"# the server drains for up to {DRAIN_SECONDS} s on SIGTERM; SIGKILL only after this",
        f"TimeoutStopSec={STOP_SECONDS}",
        "LimitNOFILE=8192",
        "DynamicUser=yes",
        f"StateDirectory={n['unit']}",
        "StateDirectoryMode=0700",
        "UMask=0077",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "PrivateUsers=yes",
        "PrivateMounts=yes",
        "NoNewPrivileges=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        (
            f"# {version.runtime} runtime: no JIT, so no memory is ever writable and executable"
            if mdwe
            else f"# {version.runtime} runtime{' with trusted code' if version.trusted_code else ''}: "
            "it may JIT-compile (e.g. PyTorch's oneDNN), so W^X memory stays allowed"
        ),
        f"MemoryDenyWriteExecute={'yes' if mdwe else 'no'}",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged",
        "SystemCallErrorNumber=EPERM",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def env_file(version: ModelVersion, reference: Reference, options: VmOptions) -> str:
    """The environment file ``modelport-NAME.env`` (systemd's EnvironmentFile= syntax)."""
    n = names(version)
    lines = [
        f"# {n['env']}: the settings of {n['service']} (read by Settings.from_env; see docs/vm.md).",
        f"# Install as {n['env_path']}, root-owned, mode 0640: it may hold a database password.",
        f"MODELPORT_HOST={options.host}",
        f"MODELPORT_PORT={options.port}",
        f"MODELPORT_HOME={n['state_dir']}",
        "MODELPORT_LOG_FORMAT=json",
    ]
    if options.export:
        lines += [
            f"# the model: modelport export {version.ref} DIR, copied to {n['model_dir']} (SageMaker mode:",
            "# MODELPORT_MODELS must stay unset)",
            f"MODELPORT_SAGEMAKER_MODEL_DIR={n['model_dir']}",
        ]
        if options.workers > 1:
            lines.append(f"SAGEMAKER_MODEL_SERVER_WORKERS={options.workers}")
        if version.trusted_code:
            lines += [
                f"# {version.ref} runs code (pickle or custom Python), registered with the trust flag",
                "MODELPORT_TRUST_EXPORTED_CODE=1",
            ]
    else:
        lines += [
            "# the model, from the shared registry below; an alias is followed as it moves",
            f"MODELPORT_MODELS={reference}",
            "# the shared registry: metadata on PostgreSQL, artifacts on S3 (credentials: the instance role)",
            _setting("MODELPORT_DATABASE_URL", options.database_url, "postgresql+psycopg://USER:PASSWORD@HOST:5432/DB"),
            _setting("MODELPORT_ARTIFACTS", options.artifacts, "s3://BUCKET/PREFIX"),
        ]
    if options.api_keys:
        lines += [
            "# API keys (hashes): modelport keys create --scope infer --file FILE, installed as",
            f"# {n['keys_source']} (0600 root); systemd hands the service a copy at this path",
            f"MODELPORT_API_KEYS_FILE={n['keys_path']}",
        ]
    elif not options.loopback:
        lines += ["# --open: anyone who can reach the port may call it (a security group is the only gate)"]
        lines.append("MODELPORT_INSECURE_OPEN=1")
    return "\n".join(lines) + "\n"


def user_data(version: ModelVersion, options: VmOptions, unit: str, env: str) -> str:
    """cloud-init user-data (``#cloud-config``): install the venv, the unit and its settings; start it."""
    n = names(version)
    files: list[dict[str, Any]] = [
        {"path": n["unit_path"], "owner": "root:root", "permissions": "0644", "content": unit},
        {"path": n["env_path"], "owner": "root:root", "permissions": "0640", "content": env},
    ]
    if options.api_keys_text is not None:
        files.append(
            {"path": n["keys_source"], "owner": "root:root", "permissions": "0600", "content": options.api_keys_text}
        )
    commands: list[Any] = [
        ["python3", "-m", "venv", options.venv],
        [f"{options.venv}/bin/pip", "install", "--no-cache-dir", "--disable-pip-version-check", options.modelport_spec],
    ]
    if options.export:
        commands.append(["install", "-d", "-m", "0755", n["model_dir"]])
    commands.append(f"systemctl daemon-reload && systemctl enable --now {n['unit']}")
    document = {
        "package_update": True,
        "packages": ["python3-venv"],
        "write_files": files,
        "runcmd": commands,
    }
    text = "#cloud-config\n" + dump(document, indent_lists=False, width=1000)  # the unit and env file as blocks
    if len(text.encode()) > USER_DATA_LIMIT:
        raise InvalidSetting(
            f"the user-data is {len(text.encode())} bytes; EC2 takes at most {USER_DATA_LIMIT}: "
            "install the API keys file by hand instead of --api-keys-file"
        )
    return text


def vm_files(version: ModelVersion, reference: Reference, options: VmOptions) -> dict[str, str]:
    """Every file ``modelport deploy vm`` writes (relative path -> text), bar the exported model."""
    n = names(version)
    unit = unit_file(version, reference, options)
    env = env_file(version, reference, options)
    files = {n["service"]: unit, n["env"]: env, "user-data.yaml": user_data(version, options, unit, env)}
    if options.api_keys_text is not None:
        files[n["keys"]] = options.api_keys_text
    return files


def _setting(variable: str, value: str | None, placeholder: str) -> str:
    if value is None:
        return f"# {variable}={placeholder}"
    return f"{variable}={_env_value(variable, value)}"


def _env_value(what: str, value: str) -> str:
    """``value`` as systemd's EnvironmentFile= reads it back: plain, or in single quotes."""
    if _PLAIN.fullmatch(value):
        return value
    if any(c in value for c in "'\\\n\r"):
        raise InvalidSetting(f"the {what} holds a quote, backslash or line break, which the environment file cannot")
    return f"'{value}'"
