"""Run a Tiltfile with stub Tilt builtins (starlark-pyo3, tools venv); print the calls as JSON.

Tilt itself cannot run here. Each stub has the keyword parameters of the Tilt builtin it
stands for, so an undefined name, a syntax error or a misspelt argument fails the evaluation.
Usage: ``.tools/venv/bin/python tests/deploy/tiltfile_check.py Tiltfile``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# starlark-pyo3 lives in the tools venv only (it would clash with the pure-Python `starlark`).
import starlark as sl  # type: ignore[import-not-found, unused-ignore]

Calls = list[dict[str, Any]]


def _recorder(calls: Calls, name: str) -> Callable[..., Any]:
    def record(**arguments: Any) -> dict[str, Any]:
        call = {"builtin": name, **{k: v for k, v in arguments.items() if v is not None}}
        calls.append(call)
        return call

    return record


def builtins(calls: Calls) -> dict[str, Callable[..., Any]]:
    """Stubs of the Tilt builtins with their real parameter names (Tilt API reference)."""
    rec = {name: _recorder(calls, name) for name in ("docker_build", "k8s_yaml", "k8s_resource")}

    def docker_build(
        ref: str,
        context: str,
        build_args: Any = None,
        dockerfile: str | None = None,
        dockerfile_contents: str | None = None,
        live_update: Any = None,
        match_in_env_vars: bool = False,
        ignore: Any = None,
        only: Any = None,
        entrypoint: Any = None,
        target: str | None = None,
        ssh: Any = None,
        network: str | None = None,
        secret: Any = None,
        extra_tag: Any = None,
        container_args: Any = None,
        cache_from: Any = None,
        pull: bool = False,
        platform: str | None = None,
        extra_hosts: Any = None,
    ) -> Any:
        return rec["docker_build"](
            ref=ref,
            context=context,
            dockerfile=dockerfile,
            dockerfile_contents=dockerfile_contents,
            live_update=live_update,
            only=only,
            entrypoint=entrypoint,
            target=target,
            build_args=build_args,
        )

    def k8s_yaml(yaml: Any, allow_duplicates: bool = False) -> Any:
        return rec["k8s_yaml"](yaml=yaml)

    def k8s_resource(
        workload: str = "",
        new_name: str = "",
        port_forwards: Any = None,
        extra_pod_selectors: Any = None,
        trigger_mode: Any = None,
        resource_deps: Any = None,
        objects: Any = None,
        auto_init: bool = True,
        pod_readiness: str = "",
        links: Any = None,
        labels: Any = None,
        discovery_strategy: str = "",
    ) -> Any:
        return rec["k8s_resource"](
            workload=workload,
            new_name=new_name,
            port_forwards=port_forwards,
            resource_deps=resource_deps,
            labels=labels,
        )

    def helm(
        pathToChartDir: str = "",  # noqa: N803 - Tilt's own parameter name
        name: str = "",
        namespace: str = "",
        values: Any = None,
        set: Any = None,
        kube_version: str = "",
        skip_crds: bool = False,
    ) -> Any:
        call = {
            "builtin": "helm",
            "chart": pathToChartDir,
            "name": name,
            "values": values,
            "set": set,
            "kube_version": kube_version,
        }
        calls.append(call)
        return call

    def sync(local_path: str, remote_path: str) -> Any:
        return {"step": "sync", "local": local_path, "remote": remote_path}

    def run(cmd: Any, trigger: Any = None, echo_off: bool = False) -> Any:
        return {"step": "run", "cmd": cmd, "trigger": trigger}

    def fall_back_on(files: Any) -> Any:
        return {"step": "fall_back_on", "files": files}

    def local_resource(
        name: str,
        cmd: Any = "",
        deps: Any = None,
        trigger_mode: Any = None,
        resource_deps: Any = None,
        ignore: Any = None,
        auto_init: bool = True,
        serve_cmd: Any = "",
        allow_parallel: bool = False,
        labels: Any = None,
        dir: str = "",
        env: Any = None,
        readiness_probe: Any = None,
        links: Any = None,
    ) -> Any:
        call = {"builtin": "local_resource", "name": name, "cmd": cmd, "deps": deps}
        calls.append(call)
        return call

    def allow_k8s_contexts(contexts: Any) -> None:
        return None

    return {
        "docker_build": docker_build,
        "k8s_yaml": k8s_yaml,
        "k8s_resource": k8s_resource,
        "helm": helm,
        "sync": sync,
        "run": run,
        "fall_back_on": fall_back_on,
        "local_resource": local_resource,
        "allow_k8s_contexts": allow_k8s_contexts,
    }


def restart_process_extension(calls: Calls, docker_build: Callable[..., Any]) -> Any:
    """``load('ext://restart_process', 'docker_build_with_restart')``."""

    def docker_build_with_restart(
        ref: str,
        context: str,
        entrypoint: Any,
        live_update: Any,
        base_suffix: str = "-tilt_docker_build_with_restart_base",
        restart_file: str = "/tmp/.restart-proc",
        trigger: Any = None,
        exit_policy: str = "restart",
        **kwargs: Any,
    ) -> Any:
        docker_build(ref, context, entrypoint=entrypoint, live_update=live_update, **kwargs)
        calls[-1]["builtin"] = "docker_build_with_restart"

    module = sl.Module()
    module.add_callable("docker_build_with_restart", docker_build_with_restart)
    return module.freeze()


def evaluate(tiltfile: Path) -> Calls:
    calls: Calls = []
    stubs = builtins(calls)
    extensions = {"ext://restart_process": restart_process_extension(calls, stubs["docker_build"])}

    def load(name: str) -> Any:
        if name not in extensions:
            raise ValueError(f"no stub for the extension {name!r}")
        return extensions[name]

    module = sl.Module()
    for name, function in stubs.items():
        module.add_callable(name, function)
    ast = sl.parse(str(tiltfile), tiltfile.read_text(), sl.Dialect.extended())
    sl.eval(module, ast, sl.Globals.standard(), sl.FileLoader(load))
    return calls


if __name__ == "__main__":
    sys.stdout.write(json.dumps(evaluate(Path(sys.argv[1]))) + "\n")
