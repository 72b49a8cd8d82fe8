"""``modelport deploy vm``: see :func:`register`.

:func:`register` adds the command to the ``deploy`` sub-app around the error handling the main
command line hands in, so this module does not import :mod:`modelport.cli.main`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from modelport.cli.common import Handled, err, open_registry, out

OUT_HELP = "Directory to write into (created). One that is not empty is refused unless --force."
FORCE_HELP = "Write into a non-empty --out: the files modelport writes are replaced, others left as they are."
MODEL_DIR = "model"  # --export writes the exported model here, under --out


def register(app: typer.Typer, handled: Handled) -> None:
    """Add ``vm`` to the ``deploy`` sub-app ``app``."""
    from modelport.shipping.vm import DEFAULT_SPEC, VENV

    @app.command("vm")
    @handled
    def vm(
        ref: Annotated[str, typer.Argument(metavar="REF", help="Registered model, e.g. iris@production or iris@3.")],
        directory: Annotated[Path, typer.Option("--out", metavar="DIR", help=OUT_HELP)],
        host: Annotated[
            str, typer.Option(help="Address the server binds on the VM (127.0.0.1: only a proxy on the VM reaches it).")
        ] = "0.0.0.0",
        port: Annotated[int, typer.Option(help="Port the server binds on the VM.")] = 8080,
        workers: Annotated[int, typer.Option(help="Server processes sharing the port.")] = 1,
        venv: Annotated[
            str, typer.Option(help="Virtual environment on the VM whose bin/modelport the unit runs (absolute).")
        ] = VENV,
        modelport_spec: Annotated[
            str, typer.Option(help="What the user-data pip-installs into --venv (a requirement, a wheel URL).")
        ] = DEFAULT_SPEC,
        registry_from_env: Annotated[
            bool,
            typer.Option(
                "--registry-from-env",
                help="Write this registry's MODELPORT_DATABASE_URL and MODELPORT_ARTIFACTS into the environment "
                "file (and so into the user-data); it must be shared: PostgreSQL, S3. Default: placeholders.",
            ),
        ] = False,
        export: Annotated[
            bool,
            typer.Option(
                "--export",
                help=f"Serve a copy instead of the registry: write the exported version into DIR/{MODEL_DIR}, to "
                "copy to the VM (pinned to that version).",
            ),
        ] = False,
        api_keys_file: Annotated[
            Path | None,
            typer.Option(
                help="API keys file (modelport keys create --file) to install with the user-data (hashes only). "
                "Default: the unit waits until you install one.",
            ),
        ] = None,
        open_: Annotated[
            bool,
            typer.Option("--open", help="No API keys: whoever the security group lets in may call the server."),
        ] = False,
        force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    ) -> None:
        """Write a hardened systemd unit, its environment file and cloud-init user-data for a Linux host or EC2."""
        from modelport.errors import InvalidSetting
        from modelport.reference import parse_reference
        from modelport.registry.export import export_version
        from modelport.settings import Settings
        from modelport.shipping.kubernetes import write_files
        from modelport.shipping.vm import VmOptions, names, vm_files

        reference = parse_reference(ref)
        if export and registry_from_env:
            raise InvalidSetting("--export and --registry-from-env contradict each other: give one")
        keys_text = None
        if api_keys_file is not None:
            try:
                keys_text = api_keys_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise InvalidSetting(f"cannot read --api-keys-file {api_keys_file}: {exc.strerror or exc}") from None
        settings = Settings.from_env()
        database_url = artifacts = None
        if registry_from_env:
            if settings.database_url.startswith("sqlite"):
                raise InvalidSetting(
                    f"--registry-from-env: this registry is a SQLite file ({settings.database_url}) a VM cannot "
                    "reach; set MODELPORT_DATABASE_URL=postgresql+psycopg://... and MODELPORT_ARTIFACTS=s3://... "
                    "(a shared registry), or pass --export"
                )
            database_url, artifacts = settings.database_url, settings.artifact_location
        options = VmOptions(  # bad options stop here, before the registry is opened
            host=host,
            port=port,
            venv=venv,
            modelport_spec=modelport_spec,
            database_url=database_url,
            artifacts=artifacts,
            export=export,
            api_keys=not open_,
            api_keys_text=keys_text,
            workers=workers,
        )
        model_dir = directory / MODEL_DIR
        registry = open_registry(settings)
        try:
            version = registry.get(ref)
            files = vm_files(version, reference, options)
            written = write_files(directory, files, force=force)
            for path in written:  # the environment file may hold a database password
                if path.name in (names(version)["env"], names(version)["keys"]):
                    path.chmod(0o600)
            if export:
                if model_dir.exists():  # write_files refused a non-empty --out unless --force
                    shutil.rmtree(model_dir)
                export_version(version, registry.artifact_path(version), model_dir, archive=False)
        finally:
            registry.close()
        n = names(version)
        out.print(f"wrote {len(written)} files into {escape(str(directory))}:")
        for path in written:
            out.print(f"  {escape(path.name)}")
        if export:
            out.print(f"  {MODEL_DIR}/ ({escape(version.ref)} exported)")
        unit, service, env = n["unit"], n["service"], n["env"]
        out.print("on EC2: aws ec2 run-instances ... --user-data file://" + escape(str(directory / "user-data.yaml")))
        out.print(
            f"on any host: sudo install -m 0644 {escape(service)} /etc/systemd/system/ && "
            f"sudo install -D -m 0640 {escape(env)} {escape(n['env_path'])} && "
            f"sudo systemctl daemon-reload && sudo systemctl enable --now {escape(unit)}"
        )
        if export:
            out.print(f"copy the model: rsync -a {escape(str(model_dir))}/ HOST:{escape(n['model_dir'])}/")
        if options.api_keys and keys_text is None:
            out.print(
                "API keys: modelport keys create --scope infer --file keys, then install it as "
                f"{escape(n['keys_source'])} (0600 root); the unit starts only once it is there"
            )
        if not export and database_url is None:
            err.print(
                f"note: fill in MODELPORT_DATABASE_URL and MODELPORT_ARTIFACTS in {escape(env)} (a shared registry "
                "the VM can reach), or use --registry-from-env or --export",
                soft_wrap=True,
            )
        if open_ and not options.loopback:
            err.print(f"warning: --open: anyone who can reach port {port} can call the server", soft_wrap=True)
        out.print(f"logs: journalctl -u {escape(unit)} -f")
