"""``modelport deploy``: deployment files for a registered model (Kubernetes, KServe).

The commands are built by :func:`commands` around the error handling the main command line
hands in (one line and an exit code, tracebacks only with ``--debug``), so this module does not
import :mod:`modelport.cli.main`, which registers it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from modelport.cli.common import Handled, open_registry, out
from modelport.cli.deploy_lambda import register as register_lambda
from modelport.cli.deploy_sagemaker import register as register_sagemaker
from modelport.cli.deploy_vm import register as register_vm
from modelport.types import ModelVersion

OUT_HELP = "Directory to write into (created). One that is not empty is refused unless --force."
FORCE_HELP = "Write into a non-empty --out: the files modelport writes are replaced, others left as they are."
IMAGE_HELP = "Image serving the model (default: localhost/modelport-NAME:VERSION, what modelport build tags)."


def _registered(ref: str) -> ModelVersion:

    registry = open_registry()
    try:
        return registry.get(ref)
    finally:
        registry.close()


def commands(handled: Handled) -> typer.Typer:
    """The ``deploy`` sub-app; ``handled`` turns a command's errors into one clear line."""
    app = typer.Typer(
        help="Deploy a registered model: Kubernetes (kustomize) and KServe files, SageMaker, AWS Lambda, a VM.",
        no_args_is_help=True,
        add_completion=False,
    )

    def report(directory: Path, written: list[Path]) -> None:
        out.print(f"wrote {len(written)} files into {escape(str(directory))}:")
        for path in written:
            out.print(f"  {escape(str(path.relative_to(directory)))}")

    @app.command("k8s")
    @handled
    def k8s(
        ref: Annotated[str, typer.Argument(metavar="REF", help="Registered model, e.g. iris@production or iris@3.")],
        directory: Annotated[Path, typer.Option("--out", metavar="DIR", help=OUT_HELP)],
        image: Annotated[str | None, typer.Option(help=IMAGE_HELP)] = None,
        registry_image: Annotated[
            str | None,
            typer.Option(
                help="Image built with --models registry, for the registry variant "
                "(default: localhost/modelport-NAME:registry)."
            ),
        ] = None,
        replicas: Annotated[
            int | None, typer.Option(min=1, help="prod's replicas when created (default: --min); the HPA then rules.")
        ] = None,
        min_replicas: Annotated[int, typer.Option("--min", min=1, help="prod autoscaler's fewest replicas.")] = 2,
        max_replicas: Annotated[int, typer.Option("--max", min=1, help="prod autoscaler's most replicas.")] = 10,
        namespace: Annotated[
            str | None, typer.Option(help="Namespace of every object (default: kubectl's current one).")
        ] = None,
        cpu: Annotated[str, typer.Option(help="CPU request per pod (dev: half of it), e.g. 500m, 1, 2.")] = "1",
        cpu_limit: Annotated[str, typer.Option(help="CPU limit per pod, >= --cpu.")] = "2",
        memory: Annotated[str, typer.Option(help="Memory request per pod, e.g. 512Mi, 2Gi.")] = "1Gi",
        memory_limit: Annotated[str | None, typer.Option(help="Memory limit per pod (default: --memory).")] = None,
        target_cpu: Annotated[
            int, typer.Option(help="CPU autoscaler's target, percent of the request (1 to 100).")
        ] = 70,
        inflight_target: Annotated[
            int, typer.Option(help="In-flight autoscaler's target: requests in flight per pod, on average.")
        ] = 8,
        artifacts: Annotated[
            str | None,
            typer.Option(
                help="The registry variant's artifact store, s3://bucket/prefix (default: a shared volume, the "
                "claim modelport-NAME-artifacts)."
            ),
        ] = None,
        grpc_port: Annotated[
            int | None,
            typer.Option(
                help="The registry variant also serves V2 gRPC on this port; its readiness probe is then gRPC health "
                "(its image needs grpcio: modelport build --with grpcio --with protobuf).",
            ),
        ] = None,
        open_: Annotated[
            bool,
            typer.Option(
                "--open",
                help="No API keys: serve whoever the NetworkPolicy lets in (default: keys from the Secret "
                "modelport-NAME-api-keys, written with modelport keys create --file).",
            ),
        ] = False,
        force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    ) -> None:
        """Write a kustomize layout: base/, overlays/dev, prod, prod-inflight, registry, and components/."""
        from modelport.reference import parse_reference
        from modelport.shipping.container import default_image
        from modelport.shipping.kubernetes import KubernetesOptions, kustomize_layout, names, write_files

        reference = parse_reference(ref)
        options = KubernetesOptions(  # bad options stop here, before the registry is opened
            image=image,
            registry_image=registry_image,
            namespace=namespace,
            replicas=replicas or min_replicas,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            cpu=cpu,
            cpu_limit=cpu_limit,
            memory=memory,
            memory_limit=memory_limit,
            target_cpu_percent=target_cpu,
            inflight_per_pod=inflight_target,
            open=open_,
            artifacts=artifacts,
            grpc_port=grpc_port,
        )
        version = _registered(ref)
        written = write_files(directory, kustomize_layout(version, reference, options), force=force)
        report(directory, written)
        overlays = escape(str(directory / "overlays"))
        baked = options.image or default_image(version)
        shared = options.registry_image or default_image(version, "registry")
        out.print(f"image: {escape(baked)} (registry variant: {escape(shared)})")
        if not options.open:
            keys = names(version)["api_keys"]
            out.print(
                f"API keys: modelport keys create --scope infer --file keys && "
                f"kubectl create secret generic {keys} --from-file=keys=keys"
            )
        out.print(f"check it: kubectl kustomize {overlays}/prod")
        out.print(f"apply it: kubectl kustomize {overlays}/prod | kubectl apply -f -")

    @app.command("kserve")
    @handled
    def kserve(
        ref: Annotated[str, typer.Argument(metavar="REF", help="Registered model, e.g. iris@production or iris@3.")],
        directory: Annotated[Path, typer.Option("--out", metavar="DIR", help=OUT_HELP)],
        image: Annotated[str | None, typer.Option(help=IMAGE_HELP)] = None,
        canary_percent: Annotated[
            int, typer.Option(min=0, max=100, help="Share of traffic the canary file sends to this version.")
        ] = 10,
        min_replicas: Annotated[int, typer.Option("--min", min=0, help="Fewest replicas (0: scale to zero).")] = 1,
        max_replicas: Annotated[int, typer.Option("--max", min=1, help="Most replicas.")] = 3,
        cpu: Annotated[str, typer.Option(help="CPU request per pod, e.g. 500m, 1.")] = "1",
        memory: Annotated[str, typer.Option(help="Memory request and limit per pod, e.g. 512Mi, 2Gi.")] = "1Gi",
        force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    ) -> None:
        """Write a KServe InferenceService (custom V2 predictor) and its canary variant."""
        from modelport.reference import parse_reference
        from modelport.shipping.container import default_image
        from modelport.shipping.kserve import kserve_files
        from modelport.shipping.kubernetes import write_files

        reference = parse_reference(ref)
        sizing: dict[str, Any] = {
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "cpu": cpu,
            "memory": memory,
        }
        version = _registered(ref)
        files = kserve_files(
            version, reference, image or default_image(version), canary_percent=canary_percent, **sizing
        )
        written = write_files(directory, files, force=force)
        report(directory, written)
        out.print(f"apply it: kubectl apply -f {escape(str(directory / 'inferenceservice.yaml'))}")
        canary = escape(str(directory / "inferenceservice-canary.yaml"))
        out.print(f"or, over a running service, as a {canary_percent}% canary: kubectl apply -f {canary}")

    register_sagemaker(app, handled)
    register_lambda(app, handled)
    register_vm(app, handled)
    return app
