"""GitHub's workflows: valid YAML, current action versions, and the commands the project runs."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
CPU_TORCH = "https://download.pytorch.org/whl/cpu"
CURRENT = {  # each action's current major, all on the Node 24 runtime
    "actions/checkout": 7,
    "actions/setup-python": 7,
    "actions/upload-artifact": 7,
    "actions/upload-pages-artifact": 5,
    "actions/deploy-pages": 5,
}


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def trigger(flow: dict) -> dict:
    return flow.get("on", flow.get(True))  # YAML 1.1 reads a bare `on` as true


def steps(flow: dict, job: str) -> list[dict]:
    return flow["jobs"][job]["steps"]


def runs(flow: dict, job: str) -> str:
    return "\n".join(step.get("run", "") for step in steps(flow, job))


def readme_block(index: int) -> list[str]:
    quick = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", quick, re.S)[index].strip().splitlines()


def test_every_action_is_at_its_current_major():
    used = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        flow = yaml.safe_load(path.read_text())
        for job in flow["jobs"].values():
            used += [step["uses"] for step in job["steps"] if "uses" in step]
    assert len(used) >= 6
    for uses in used:
        action, version = uses.split("@")
        assert action in CURRENT, f"{uses}: an action this test does not know; check its major"
        assert version == f"v{CURRENT[action]}", f"{uses}: the current major is v{CURRENT[action]}"


def test_the_pages_workflow_builds_the_site_and_deploys_it_on_pushes_to_main():
    flow = workflow("site.yml")
    assert trigger(flow)["push"]["branches"] == ["main"]
    assert flow["permissions"] == {"contents": "read"}  # the build job needs no more
    assert flow["jobs"]["build"]["env"]["PIP_EXTRA_INDEX_URL"] == CPU_TORCH
    dev_install = readme_block(1)[0].removeprefix(".venv/bin/python")
    assert dev_install in runs(flow, "build") and ".ci/build-site" in runs(flow, "build")
    upload = next(s for s in steps(flow, "build") if "upload-pages-artifact" in s.get("uses", ""))
    assert upload["with"]["path"] == "_site"
    deploy = flow["jobs"]["deploy"]
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["steps"][0]["uses"].startswith("actions/deploy-pages")


def test_the_test_workflow_runs_the_projects_ci_on_pull_requests():
    flow = workflow("tests.yml")
    assert "pull_request" in trigger(flow) and trigger(flow)["push"]["branches"] == ["main"]
    assert flow["permissions"] == {"contents": "read"}
    job = flow["jobs"]["test"]
    assert job["container"].startswith("python:3.11-")  # Debian: its chromium, apt as root
    assert job["env"]["PIP_EXTRA_INDEX_URL"] == CPU_TORCH
    assert "bash .ci/run" in runs(flow, "test").splitlines()
    ci = [
        re.sub(r"^check [\w-]+ ", "", line)
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
    ]
    assert readme_block(1)[1] in ci  # .ci/run runs README's test command (test_packaging too)
