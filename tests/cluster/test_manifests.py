"""Every Kubernetes manifest under cluster/ parses, and says what the job relies on: entrypoint flags the CLI
(protect or persguard) accepts, a dated run id for the nightly run (so a retry resumes it), no overlapping nights, GPU limits that
match the actor pool, pinned images."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from jobs.persguard import persguard_command
from jobs.protect import protect_command

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
MANIFESTS = sorted(CLUSTER.rglob("*.yaml"))


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kind(name: str) -> list[dict]:
    return [d for p in MANIFESTS for d in documents(p) if d["kind"] == name]


# The jobs a RayJob may run, by entrypoint script.
COMMANDS = {"/app/jobs/protect.py": protect_command, "/app/jobs/persguard.py": persguard_command}


def check_entrypoint(entrypoint: str, script: str = "/app/jobs/protect.py") -> dict:
    """The RayJob entrypoint runs ``script`` with options its real CLI parses; returns them."""
    tokens = shlex.split(entrypoint)
    assert tokens[:2] == ["python", script], tokens[:2]
    context = COMMANDS[script].make_context(script, tokens[2:])  # raises on an unknown flag or bad value
    return context.params


def check_ray_cluster(spec: dict, params: dict | None) -> None:
    assert spec["rayVersion"] == "2.60.0"
    images = [c["image"] for g in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
              for c in g["template"]["spec"]["containers"]]
    assert all(":" in i and not i.endswith(":latest") for i in images), images
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"].get("limits", {})]
    assert gpu_groups, "a GPU worker group"
    for group in gpu_groups:
        resources = group["template"]["spec"]["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"]
        if params and params["gpus_per_actor"]:
            gpus = float(resources["limits"]["nvidia.com/gpu"])
            assert gpus >= params["gpus_per_actor"], "an actor must fit on one worker"
            assert group["maxReplicas"] * gpus >= (params["actors"] or 1) * params["gpus_per_actor"]


def test_every_manifest_parses():
    assert len(MANIFESTS) >= 5, MANIFESTS
    for path in MANIFESTS:
        for document in documents(path):
            assert document["apiVersion"] and document["kind"] and document["metadata"]["name"], path


@pytest.mark.parametrize("rayjob", kind("RayJob"), ids=lambda d: d["metadata"]["name"])
def test_rayjob_entrypoints(rayjob):
    script = shlex.split(rayjob["spec"]["entrypoint"])[1]
    params = check_entrypoint(rayjob["spec"]["entrypoint"], script)
    if script.endswith("persguard.py"):
        # A resubmission resumes from the checkpoints under the output; one GPU per Ray Train worker.
        assert params["output_uri"] and params["gpus"] and rayjob["spec"]["backoffLimit"] >= 1
        check_ray_cluster(rayjob["spec"]["rayClusterSpec"], None)
        gpu_replicas = sum(g["maxReplicas"] * int(g["template"]["spec"]["containers"][0]["resources"]["limits"]
                                                   .get("nvidia.com/gpu", 0))
                           for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"])
        assert gpu_replicas >= params["workers"], "Ray Train waits for one GPU per worker"
        return
    assert params["run_id"], "a fixed run id: a resubmission resumes it"
    check_ray_cluster(rayjob["spec"]["rayClusterSpec"], params)


def test_nightly_cronjob_creates_a_dated_rayjob_that_resumes_on_retry():
    (cronjob,) = kind("CronJob")
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid" and spec["startingDeadlineSeconds"] > 0
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+", container["image"]), "pinned waiter image"
    script = container["args"][0]
    # 1. The script's own run id line and its own substitution, run by a real shell on the template.
    run_id_line = next(line.strip() for line in script.splitlines() if line.strip().startswith("RUN_ID="))
    sed = re.search(r'sed "([^"]+)"', script).group(1)
    (config_map,) = [d for d in kind("ConfigMap") if d["metadata"]["name"] == "rtb-nightly-rayjob"]
    rendered = subprocess.run(["sh", "-c", f'{run_id_line}; sed "{sed}"; echo "RUN_ID=$RUN_ID"'],
                              input=config_map["data"]["rayjob.yaml"], capture_output=True, text=True, check=True).stdout
    run_id = rendered.strip().splitlines()[-1].removeprefix("RUN_ID=")
    assert re.fullmatch(r"nightly-\d{4}-\d{2}-\d{2}", run_id), run_id
    rayjob = yaml.safe_load(rendered.rsplit("RUN_ID=", 1)[0])
    # 2. The RayJob of the date: its name and its run id carry the date; retries resume that run.
    assert rayjob["kind"] == "RayJob" and rayjob["metadata"]["name"] == f"rtb-{run_id}"
    assert len(rayjob["metadata"]["name"]) <= 63
    params = check_entrypoint(rayjob["spec"]["entrypoint"])
    assert params["run_id"] == run_id and not params["force"]
    assert rayjob["spec"]["backoffLimit"] >= 1 and rayjob["spec"]["shutdownAfterJobFinishes"]
    assert rayjob["spec"]["activeDeadlineSeconds"] < spec["jobTemplate"]["spec"]["activeDeadlineSeconds"]
    check_ray_cluster(rayjob["spec"]["rayClusterSpec"], params)
    # 3. The waiter may create and watch RayJobs and read its template, nothing more.
    (role,) = [r for r in kind("Role") if r["metadata"]["name"] == pod["serviceAccountName"]]
    verbs = {res: set(rule["verbs"]) for rule in role["rules"] for res in rule["resources"]}
    assert verbs["rayjobs"] == {"get", "list", "watch", "create"} and verbs["configmaps"] == {"get"}
