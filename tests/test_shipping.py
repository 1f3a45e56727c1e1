"""Shipping: the Dockerfile, the Apptainer definition, the SLURM scripts and the GitHub workflows.

Each file passes its linter (hadolint, spython, shellcheck, actionlint: pip wheels from the ``test`` extra; a test
skips only when its tool is not installed), says what users are told it does, and stays in step with the one
version in ``bids_encoder/_version.py``. The SLURM scripts run end to end against stand-ins for ``sbatch`` and
``apptainer`` (the stand-in runs the real app on the host, with the container paths mapped back).
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bids_encoder import __version__
from bids_encoder.cli import cli

pytestmark = pytest.mark.xdist_group(name="shipping")

ROOT = Path(__file__).resolve().parents[1]
IMAGE = f"ghcr.io/bids-encoder/bids_encoder:{__version__}"


def _tool(name):
    for candidate in (Path(sys.executable).parent / name, shutil.which(name)):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.skip(f"{name} is not installed (pip install -e '.[test]' brings it)")


def _run(*command, **kwargs):
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)


def _dockerfile():
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + "\n"
            continue
        current += line
        if current.strip():
            keyword, _, rest = current.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


# ---- Dockerfile ---------------------------------------------------------------------------------------------------

def test_dockerfile_passes_hadolint():
    done = _run(_tool("hadolint"), "--no-color", ROOT / "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_is_multistage_non_root_with_the_app_as_entrypoint():
    instructions = _dockerfile()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) == 2 and stages[0].endswith("AS builder")
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in instructions
    final = instructions[[keyword for keyword, _ in instructions].index("FROM", 1):]
    args = dict(rest.split("=", 1) for keyword, rest in final if keyword == "ARG" and "=" in rest)
    assert args["VERSION"] == __version__, "Dockerfile's ARG VERSION must equal bids_encoder/_version.py"
    assert args["TENSORFLOW"] == "gpu"
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and int(users[-1].split(":")[0]) != 0
    assert [rest for keyword, rest in final if keyword == "ENTRYPOINT"] == ['["bids_encoder"]']
    labels = " ".join(rest for keyword, rest in final if keyword == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert "org.opencontainers.image.title" in labels and "org.opencontainers.image.source" in labels
    environment = " ".join(rest for keyword, rest in final if keyword == "ENV")
    for setting in ("OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1", "MKL_NUM_THREADS=1", "MPLCONFIGDIR=/tmp/",
                    "BIDS_ENCODER_IMAGE=${IMAGE_TAG}"):
        assert setting in environment
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignore[:1] == ["**"] and {"!pyproject.toml", "!README.md", "!bids_encoder/"} <= set(ignore)


@pytest.mark.parametrize(("flavour", "tensorflow"), [("gpu", "tensorflow[and-cuda]"), ("cpu", "tensorflow-cpu")])
def test_dockerfile_installs_the_project_requirements_with_the_chosen_tensorflow(flavour, tensorflow):
    """Run the requirement rewrite of the build stage as it stands in the Dockerfile."""
    import tomllib

    build = next(rest for keyword, rest in _dockerfile() if keyword == "RUN" and "tomllib" in rest)
    assert f'{flavour}) flavour="{tensorflow}"' in build
    code = re.search(r'python -c "(.*?)" "\$flavour"', build, re.S).group(1).replace("\n", "")
    done = _run(sys.executable, "-c", code, tensorflow, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bound = next(d for d in dependencies if d.startswith("tensorflow"))[len("tensorflow"):]
    expected = [tensorflow + bound if d.startswith("tensorflow") else d for d in dependencies]
    assert done.stdout.split() == expected
    assert "pip install --no-cache-dir --no-deps ." in build


# ---- Apptainer ----------------------------------------------------------------------------------------------------

APPTAINER_SECTIONS = {"%setup", "%files", "%environment", "%post", "%runscript", "%startscript", "%test", "%labels",
                      "%help", "%arguments"}


def test_apptainer_definition_parses_and_bootstraps_from_the_docker_image():
    _tool("spython")
    from spython.main.parse.parsers import SingularityParser

    path = ROOT / "singularity" / "bids_encoder.def"
    text = path.read_text()
    assert re.search(r"^Bootstrap: docker$", text, re.M)
    sections = set(re.findall(r"^(%\w+)", text, re.M))
    assert sections <= APPTAINER_SECTIONS and {"%runscript", "%test", "%labels", "%help"} <= sections
    recipe = SingularityParser(str(path)).recipe["spython-base"]
    assert recipe.fromHeader == IMAGE, "the definition must bootstrap from the image of this version"
    assert recipe.cmd.strip() == 'exec bids_encoder "$@"'
    assert f"org.opencontainers.image.version {__version__}" in recipe.labels
    assert any("bids_encoder --version" in line for line in recipe.install)
    converted = _run(_tool("spython"), "recipe", "--parser", "singularity", path)
    assert converted.returncode == 0 and converted.stdout.startswith(f"FROM {IMAGE}"), converted.stderr


# ---- SLURM --------------------------------------------------------------------------------------------------------

SCRIPTS = ["submit.sh", "participant.sbatch", "group.sbatch"]


def test_slurm_scripts_pass_shellcheck():
    done = _run(_tool("shellcheck"), "--shell=bash", *(ROOT / "singularity" / s for s in SCRIPTS))
    assert done.returncode == 0, done.stdout + done.stderr
    participant = (ROOT / "singularity/participant.sbatch").read_text()
    assert "#SBATCH --gres=gpu:1" in participant and "#SBATCH --cpus-per-task=" in participant


FAKE_SBATCH = """#!{python}
import json, os, sys
log = os.environ["FAKE_SLURM_LOG"]
job = 1000 + (sum(1 for _ in open(log)) if os.path.exists(log) else 0)
with open(log, "a") as handle:
    handle.write(json.dumps({{"args": sys.argv[1:], "job": job}}) + "\\n")
print(f"{{job}};cluster")
"""

FAKE_APPTAINER = """#!{python}
# Stands for `apptainer run [options] IMAGE args`: records the call, then runs the app on the host with each bound
# container path mapped back to its host folder.
import json, os, sys
args = sys.argv[1:]
assert args[0] == "run", args
flags, binds, i = [], {{}}, 1
while not args[i].endswith(".sif"):
    if args[i] == "-B":
        source, target, *mode = args[i + 1].split(":")
        binds[target] = [source, *mode]
        i += 2
    else:
        flags.append(args[i])
        i += 1
image, rest = args[i], args[i + 1:]
with open(os.environ["FAKE_APPTAINER_LOG"], "a") as handle:
    handle.write(json.dumps({{"flags": flags, "binds": binds, "image": image, "args": rest}}) + "\\n")
def host(arg):
    for target, (source, *_) in binds.items():
        if arg == target or arg.startswith(target + "/"):
            return source + arg[len(target):]
    return arg
os.execv(sys.executable, [sys.executable, "-m", "bids_encoder", *map(host, rest)])
"""


def _fake_bin(folder):
    folder.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("apptainer", FAKE_APPTAINER)):
        (folder / name).write_text(text.format(python=sys.executable))
        (folder / name).chmod(0o755)
    return folder


def _submission(call):
    """Options, script and script arguments of one recorded sbatch call; the --export variables."""
    args = call["args"]
    index = next(i for i, a in enumerate(args) if a.endswith(".sbatch"))
    options, script, script_args = args[:index], Path(args[index]), args[index + 1:]
    export = next(o for o in options if o.startswith("--export="))[len("--export="):].split(",")
    assert export[0] == "ALL"
    return options, script, script_args, dict(item.split("=", 1) for item in export[1:])


def test_slurm_array_runs_one_participant_per_task_then_the_group(tmp_path):
    import os

    from bids_encoder.datasets.example_dataset import make_example_dataset

    make_example_dataset(tmp_path / "bids", n_subjects=2, n_runs=1, n_volumes=60, shape=(8, 9, 7), noise=0.1, seed=5)
    (tmp_path / "bids_encoder.sif").write_bytes(b"")
    fake = _fake_bin(tmp_path / "bin")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "SIF": str(tmp_path / "bids_encoder.sif"),
           "LOG_DIR": str(tmp_path / "logs"), "FAKE_SLURM_LOG": str(tmp_path / "sbatch.jsonl"),
           "FAKE_APPTAINER_LOG": str(tmp_path / "apptainer.jsonl")}
    out = tmp_path / "derivatives" / "bids_encoder"
    done = _run("bash", ROOT / "singularity/submit.sh", tmp_path / "bids", out, "--confounds", "none", "--no-report",
                "--", "--min-rsquared", "0.01", "--no-report", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "array job 1000, 2 task(s)" in done.stdout and "group level: job 1001" in done.stdout

    calls = [json.loads(line) for line in (tmp_path / "sbatch.jsonl").read_text().splitlines()]
    assert len(calls) == 2
    options, script, args, export = _submission(calls[0])
    assert script == ROOT / "singularity/participant.sbatch"
    assert "--array=1-2%20" in options and "--parsable" in options
    assert args == ["--confounds", "none", "--no-report"]
    assert Path(export["PARTICIPANTS_FILE"]).read_text() == "01\n02\n"
    assert export["BIDS_DIR"] == str(tmp_path / "bids") and export["OUTPUT_DIR"] == str(out)
    group_options, group_script, group_args, group_export = _submission(calls[1])
    assert group_script == ROOT / "singularity/group.sbatch"
    assert "--dependency=afterok:1000" in group_options  # the whole array must succeed first
    assert group_args == ["--min-rsquared", "0.01", "--no-report"]

    # What SLURM would do: every array task, then (afterok) the group job.
    for task in (1, 2):
        task_env = {**env, **export, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_JOB_ID": "1000",
                    "SLURM_CPUS_PER_TASK": "2", "SLURM_TMPDIR": str(scratch)}
        done = _run("bash", script, *args, env=task_env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    done = _run("bash", group_script, *group_args, env={**env, **group_export, "SLURM_JOB_ID": "1001",
                                                         "SLURM_TMPDIR": str(scratch)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    runs = [json.loads(line) for line in (tmp_path / "apptainer.jsonl").read_text().splitlines()]
    assert [r["flags"] for r in runs] == [["--nv", "--cleanenv"]] * 2 + [["--cleanenv"]]
    for run, level in zip(runs, ("participant", "participant", "group"), strict=True):
        assert run["image"] == str(tmp_path / "bids_encoder.sif")
        assert run["binds"]["/data"] == [str(tmp_path / "bids"), "ro"] and run["binds"]["/out"] == [str(out)]
        assert Path(run["binds"]["/work"][0]).parent == scratch  # node-local scratch
        assert run["args"][:3] == ["/data", "/out", level]
        assert run["args"][run["args"].index("--work-dir") + 1] == "/work"
    assert [r["args"][r["args"].index("--participant-label") + 1] for r in runs[:2]] == ["01", "02"]
    assert runs[0]["args"][runs[0]["args"].index("--nthreads") + 1] == "2"
    assert list(scratch.iterdir()) == []  # each job removed its scratch folder

    for subject in ("01", "02"):
        assert len(list((out / f"sub-{subject}/func").glob("*stat-rsquared_statmap.json"))) == 1
    group = json.loads(next((out / "group").glob("*contrast-faces_stat-z_statmap.json")).read_text())
    assert group["Participants"] == ["sub-01", "sub-02"] and group["MinRSquared"] == 0.01


@pytest.mark.parametrize(("problem", "code", "message"), [
    ("no image", 66, "no Apptainer image at"),
    ("not a dataset", 16, "is not a BIDS dataset"),
    ("no participants", 18, "no participants found"),
    ("no arguments", 64, "usage: submit.sh BIDS_DIR OUTPUT_DIR"),
])
def test_slurm_submission_refuses_bad_input_before_submitting(tmp_path, problem, code, message):
    import os

    bids = tmp_path / "bids"
    bids.mkdir()
    if problem != "not a dataset":
        (bids / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    if problem not in ("no participants",):
        (bids / "sub-01").mkdir()
    if problem != "no image":
        (tmp_path / "bids_encoder.sif").write_bytes(b"")
    fake = _fake_bin(tmp_path / "bin")
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "SIF": str(tmp_path / "bids_encoder.sif"),
           "LOG_DIR": str(tmp_path / "logs"), "FAKE_SLURM_LOG": str(tmp_path / "sbatch.jsonl")}
    arguments = [] if problem == "no arguments" else [bids, tmp_path / "out"]
    done = _run("bash", ROOT / "singularity/submit.sh", *arguments, env=env, cwd=tmp_path)
    assert done.returncode == code and message in done.stderr, done.stderr
    assert not (tmp_path / "sbatch.jsonl").exists()


# ---- GitHub workflows ---------------------------------------------------------------------------------------------

def _workflow(name):
    content = yaml.safe_load((ROOT / ".github/workflows" / name).read_text())
    return content.get("on", content.get(True)), content["jobs"]  # YAML 1.1 reads the key `on` as True


def test_workflows_pass_actionlint():
    workflows = sorted((ROOT / ".github/workflows").glob("*.yml"))
    assert [p.name for p in workflows] == ["docker.yml", "tests.yml"]
    done = _run(_tool("actionlint"), "-no-color", "-shellcheck", _tool("shellcheck"), *workflows, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_workflows_test_on_push_and_pull_request_and_check_the_image():
    triggers, jobs = _workflow("tests.yml")
    assert {"push", "pull_request"} <= set(triggers)
    steps = [step.get("run", "") for step in jobs["pytest"]["steps"]]
    assert any('pip install -e ".[test]"' in s for s in steps) and ".venv/bin/python -m pytest -n 2" in steps
    triggers, jobs = _workflow("docker.yml")
    assert {"push", "pull_request"} <= set(triggers)
    assert jobs["image"]["strategy"]["matrix"]["tensorflow"] == ["cpu", "gpu"]
    commands = "\n".join(step.get("run", "") for step in jobs["image"]["steps"])
    assert "docker run --rm bids_encoder:ci --help" in commands
    assert 'test "$(docker run --rm bids_encoder:ci --version)" = "bids_encoder ' in commands
    assert "-m bids_encoder.example" in commands


# ---- README and CLI -----------------------------------------------------------------------------------------------

def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    quickstart = readme.split("## Quick start", 1)[1].split("```", 2)[1]
    commands = [line for line in quickstart.splitlines() if line and not line.startswith(("#", "bash"))]
    assert len(commands) == 2, commands
    assert commands[0].startswith("python3 -m venv .venv") and commands[0].endswith("-m bids_encoder.example")
    assert commands[1] == ci[-1], "README's test command and .ci/run's last line differ"


def test_readme_documents_every_option_and_the_container_runs():
    readme = (ROOT / "README.md").read_text()
    for parameter in cli.params:
        for option in parameter.opts:
            if option.startswith("--"):
                assert f"`{option}" in readme, f"{option} is not in the README's CLI reference"
    assert "docker run --rm --gpus all -v BIDS:/data:ro -v OUT:/out" in readme
    assert "singularity/submit.sh" in readme and "apptainer build" in readme


def test_nthreads_limits_the_blas_pools():
    code = ("from threadpoolctl import threadpool_info; from bids_encoder.cli.support import _limit_threads; "
            "import numpy, scipy.linalg; _limit_threads(1); print([p['num_threads'] for p in threadpool_info()])")
    done = _run(sys.executable, "-c", code, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr
    threads = json.loads(done.stdout)
    assert threads and set(threads) == {1}
