"""`skillgraft sweep report`: the CSV is the storage's trials, the front is non-dominated, the
page renders in headless Chromium, any trial rebuilds with its printed command, and the
storage opens unchanged in optuna-dashboard."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("optuna")

from sweep_helpers import free_port, trials, wait_for, write_sweep  # noqa: E402
from test_report_html import CHROMIUM, _chromium, page_widths  # noqa: E402

OBJECTIVES = [{"measure": "lab_skill_b", "options": {"n": 40}}, {"measure": "lab_retention_a", "options": {"n": 40}}]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from skillgraft.cli import main

    root = tmp_path_factory.mktemp("report")
    path = write_sweep(root / "s.yaml", objectives=OBJECTIVES, sampler={"name": "random"})
    out = root / "run"
    assert main(["sweep", "run", str(path), "-o", str(out), "--n-trials", "8"]) == 0
    assert main(["sweep", "report", str(out), "--json"]) == 0
    return out


def test_csv_equals_the_storage(sweep):
    stored = trials(sweep)
    with open(sweep / "report" / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["number"]) for r in rows] == [t.number for t in stored]
    for row, trial in zip(rows, stored):
        assert row["state"] == trial.state.name
        assert float(row["lab_skill_b"]) == trial.values[0] and float(row["lab_retention_a"]) == trial.values[1]
        assert float(row["param:vectors.0.scale"]) == trial.params["vectors.0.scale"]


def test_front_is_non_dominated_and_dominates_the_rest(sweep):
    from skillgraft.sweep.results import dominates

    result = json.loads(subprocess.run([sys.executable, "-m", "skillgraft.cli", "sweep", "report", str(sweep),
                                        "--json"], capture_output=True, text=True, check=True).stdout)
    front = {e["number"]: e["values"] for e in result["best"]}
    both = ["maximize", "maximize"]
    assert front
    for number, values in front.items():
        assert not any(dominates(other, values, both) for other in front.values())
    for trial in trials(sweep):
        if trial.number not in front:
            assert any(dominates(values, trial.values, both) for values in front.values()), trial.number
    # front trials keep their models, the others only their recipes
    assert sorted(p.parent.name for p in (sweep / "trials").glob("*/output")) == [f"{n:04d}" for n in sorted(front)]


def test_every_trial_folder_verifies(sweep):
    """A trial folder's manifest lists what it holds: the kept model as a verified part, a
    dropped trial's recipe and result only."""
    from skillgraft.checkpoint.manifest import verify

    for folder in sorted((sweep / "trials").iterdir()):
        report = verify(folder)
        assert report["ok"] and report["kind"] == "trial", (folder.name, report)
        parts = json.loads((folder / "skillgraft.json").read_text()).get("parts", [])
        assert parts == (["output"] if (folder / "output").is_dir() else []), folder.name


def test_a_dropped_trial_rebuilds_with_its_command(sweep, tmp_path):
    from skillgraft.cli import main
    from skillgraft.sweep.config import load_sweep
    from skillgraft.sweep.measures import registry

    dropped = next(p.parent for p in sorted((sweep / "trials").glob("*/recipe.yaml"))
                   if not (p.parent / "output").exists())
    result = json.loads((dropped / "result.json").read_text())
    assert result["rebuild"] == f"skillgraft run {dropped / 'recipe.yaml'}"
    assert main(["run", str(dropped / "recipe.yaml"), "-o", str(tmp_path / "again"), "--quiet"]) == 0
    recipe = load_sweep(sweep.parent / "s.yaml").recipe({}, tmp_path / "x")
    assert registry()["lab_skill_b"](tmp_path / "again", recipe, n=40) == result["values"][0]


def test_report_writes_each_plot_as_a_png_beside_the_page(sweep):
    """The page's plots as files too (docs show a sweep's front): the same images, PNG bytes."""
    import base64

    html = (sweep / "report" / "report.html").read_text()
    embedded = [base64.b64decode(uri) for uri in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]
    files = [(sweep / "report" / f"{stem}.png").read_bytes() for stem in ("history", "front", "parameters")]
    assert files == embedded and all(f.startswith(b"\x89PNG") for f in files)


def test_report_renders_in_headless_chromium(sweep):
    html = (sweep / "report" / "report.html").read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:)""", html)
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", (sweep / "report" / "report.html").as_uri()).stdout
    check = re.search(r'id="image-check" data-loaded="(\d+)" data-total="(\d+)"', dom)
    assert check and check.group(1) == check.group(2) == "3", dom[-1500:]  # history, front, parameters
    assert dom.count('class="trial-row"') == 8
    assert dom.count('class="best-row"') == len(list((sweep / "trials").glob("*/output")))
    assert " plots loaded" not in dom  # the image check is data for tests, not a line on the page


def test_the_report_fits_a_1280_px_window(sweep, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    scroll, client = page_widths(sweep / "report" / "report.html", tmp_path)
    assert scroll <= client, f"the page is {scroll} px wide in a {client} px window (the trials table overflows)"


def test_optuna_dashboard_lists_the_trials(sweep):
    dashboard = shutil.which("optuna-dashboard") or str(Path(sys.executable).with_name("optuna-dashboard"))
    port = free_port()
    server = subprocess.Popen([dashboard, f"sqlite:///{sweep / 'study.db'}", "--port", str(port), "--host",
                               "127.0.0.1", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def get(path):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                    return json.loads(response.read())
            except OSError:
                return None

        studies = wait_for(lambda: get("/api/studies"), timeout=60, step=0.5)
        assert studies, "optuna-dashboard did not answer"
        (summary,) = studies["study_summaries"]
        assert summary["study_name"] == sweep.name
        detail = get(f"/api/studies/{summary['study_id']}?after=0")
        assert [t["number"] for t in detail["trials"]] == [t.number for t in trials(sweep)]
        assert all(not math.isnan(v) for t in detail["trials"] for v in t["values"])
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_terminal_shows_each_objectives_importances(sweep, run_cli):
    """What the page ranks, the command prints: per objective its top parameters, in the
    order and with the values of `--json`'s importances."""
    status, printed, _ = run_cli("sweep", "report", sweep)
    assert status == 0
    status, as_json, _ = run_cli("sweep", "report", sweep, "--json")
    importance = json.loads(as_json)["importances"]
    for name in ("lab_skill_b", "lab_retention_a"):
        ranked = list(importance[name].items())[:5]
        line = next(line for line in printed.splitlines() if line.startswith(f"  {name}: "))
        assert line == f"  {name}: " + ", ".join(f"{p} {v:.2f}" for p, v in ranked)
    assert printed.index("importances") < printed.index("report: ")
