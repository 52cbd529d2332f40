"""Shared plumbing of the JVM-based environments (TextWorld-Express, ScienceWorld run a jar through py4j)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .base import EnvCrashedError, JavaNotFoundError


T = TypeVar("T")

JAVA_INSTALL_HINT = (
    "Install a Java runtime (version 11 or newer), e.g. `sudo apt-get install -y openjdk-17-jre-headless` on "
    "Debian/Ubuntu or `conda install -c conda-forge openjdk=17`, and make sure `java` is on PATH."
)


def require_java(env_name: str) -> str:
    """Return the path of the `java` executable, or raise `JavaNotFoundError` saying how to install one.

    The environments start the JVM with a bare ``java`` command, so only PATH counts (``JAVA_HOME`` is not used).
    """
    java = shutil.which("java")
    if java is None:
        java_home = os.environ.get("JAVA_HOME")
        extra = ""
        if java_home:
            extra = (
                f" JAVA_HOME is set to {java_home!r}, but {env_name} starts `java` from PATH: add "
                f"{os.path.join(java_home, 'bin')!r} to PATH."
            )
        raise JavaNotFoundError(
            f"{env_name} needs Java, and no `java` executable was found on PATH.{extra} {JAVA_INSTALL_HINT}"
        )
    return java


def _py4j_errors() -> tuple[type[BaseException], ...]:
    from py4j.protocol import Py4JError

    return (Py4JError, ConnectionError, BrokenPipeError, EOFError)


def _exit_status(gateway: Any) -> str:
    proc = getattr(gateway, "java_process", None)
    code = proc.poll() if proc is not None else None
    if code is None:
        return "the Java process is still running but does not answer"
    return f"the Java process exited with status {code}"


@contextlib.contextmanager
def guard(what: str, gateway: Any) -> Iterator[None]:
    """Turn py4j/connection failures inside the block into `EnvCrashedError` with the JVM's exit status."""
    try:
        yield
    except _py4j_errors() as err:
        raise EnvCrashedError(
            f"{what}: the environment process crashed or stopped answering ({_exit_status(gateway)}; "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Create a new environment "
            "object to continue."
        ) from err


def start(env_name: str, factory: Callable[[], T]) -> T:
    """Check for Java, then build the py4j-backed environment, turning start-up failures into clear errors."""
    require_java(env_name)
    # py4j logs a traceback for every failed connection attempt; our errors carry the facts.
    logging.getLogger("py4j").setLevel(logging.CRITICAL)
    try:
        return factory()
    except FileNotFoundError as err:  # java vanished between the check and the launch
        raise JavaNotFoundError(f"{env_name} could not start Java ({err}). {JAVA_INSTALL_HINT}") from err
    except _py4j_errors() + (OSError,) as err:
        raise EnvCrashedError(f"{env_name}: the Java environment process failed to start ({err}).") from err


def shutdown(raw_env: Any) -> None:
    """Close a py4j-backed environment, tolerating an already dead JVM, and stop its `__del__` from closing again."""
    if raw_env is None:
        return
    with contextlib.suppress(Exception):
        raw_env.close()
    proc = getattr(getattr(raw_env, "_gateway", None), "java_process", None)
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(Exception):
            proc.terminate()
            proc.wait(timeout=5)
    # Both packages call close() again from __del__, which would log errors on a closed gateway.
    with contextlib.suppress(Exception):
        raw_env.close = lambda: None
