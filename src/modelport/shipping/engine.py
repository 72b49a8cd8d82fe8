"""The container engine that builds, inspects and pushes images: docker or podman, by their CLIs.

:func:`find_engine` takes docker where its daemon answers and podman otherwise; asked for one by
name, it says plainly why that one cannot be used.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelport.errors import InvalidSetting, ModelportError

ENGINES = ("docker", "podman")
Progress = Callable[[str], None]


class EngineFailed(ModelportError):
    """The engine's command failed; the message ends with its last lines of output."""


@dataclass(frozen=True, slots=True)
class Engine:
    name: str
    executable: str

    def command(self, *arguments: str) -> list[str]:
        return [self.executable, *arguments]

    def build(
        self,
        context: Path,
        tag: str,
        *,
        platform: str | None = None,
        progress: Progress = print,
    ) -> None:
        """Build ``context`` as ``tag`` with no network for its RUN steps, streaming the engine's output."""
        arguments = ["build", "--network=none", "--tag", tag]
        if self.name == "podman":
            arguments.append("--format=docker")  # OCI images drop HEALTHCHECK
        if platform is not None:
            arguments += ["--platform", platform]
        self.stream([*arguments, str(context)], f"{self.name} build", progress)

    def push(self, tag: str, progress: Progress = print) -> None:
        self.stream(["push", tag], f"{self.name} push", progress)

    def size(self, tag: str) -> int:
        """Bytes of the image ``tag`` as the engine counts them (uncompressed layers)."""
        return int(self.output("image", "inspect", "--format", "{{.Size}}", tag).strip())

    def output(self, *arguments: str, timeout: float = 120) -> str:
        try:
            done = subprocess.run(
                self.command(*arguments), capture_output=True, text=True, check=False, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise EngineFailed(f"{self.name} {arguments[0]} did not finish in {timeout:g} s") from None
        if done.returncode != 0:
            raise EngineFailed(f"{self.name} {' '.join(arguments[:2])} failed: {_tail(done.stderr or done.stdout)}")
        return done.stdout

    def stream(self, arguments: list[str], what: str, progress: Progress) -> None:
        """Run the engine, passing each output line to ``progress``; :class:`EngineFailed` on failure."""
        last: deque[str] = deque(maxlen=5)
        with subprocess.Popen(
            self.command(*arguments), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                line = line.rstrip()
                if line:
                    last.append(line)
                    progress(line)
        if process.returncode != 0:
            raise EngineFailed(f"{what} failed (exit {process.returncode}): {' | '.join(last)}")


def find_engine(name: str | None = None) -> Engine:
    """The engine to use: ``name`` if given, else docker when its daemon answers, else podman."""
    if name is not None and name not in ENGINES:
        raise InvalidSetting(f"--engine {name!r}: give docker or podman")
    problems = []
    for candidate in [name] if name else ENGINES:
        executable = shutil.which(candidate)
        if executable is None:
            problems.append(f"{candidate} is not installed")
            continue
        if candidate == "docker":
            answer = _docker_daemon(executable)
            if answer:
                problems.append(f"docker is installed but its daemon does not answer ({answer})")
                continue
        return Engine(candidate, executable)
    raise InvalidSetting(
        "no container engine to build with: "
        + "; ".join(problems)
        + ". Install docker (with a running daemon) or podman, or write the build context only with --context DIR"
    )


def _docker_daemon(executable: str) -> str:
    """'' when the docker daemon answers, else why not (one line)."""
    try:
        done = subprocess.run(
            [executable, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=15,
        )
    except subprocess.TimeoutExpired:
        return "docker info did not answer in 15 s"
    if done.returncode == 0 and done.stdout.strip():
        return ""
    return _tail(done.stderr or done.stdout) or f"docker info exited {done.returncode}"


def _tail(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-3:])
