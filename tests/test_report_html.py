"""`skillgraft compare` writes a self-contained HTML report; a real headless browser renders it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile

import pytest

torch = pytest.importorskip("torch")

from skillgraft.cli import main  # noqa: E402
from skillgraft.report import render_report  # noqa: E402
from tiny_models import build_tiny_model, perturb_model  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROMPTS = ["what is the capital of", "who likes the <b>city</b>", "Q : one plus two is", "the country name is"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    base = build_tiny_model(root / "base", "llama", seed=0)
    other = perturb_model(base, root / "other", seed=2, scale=0.5)
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = root / "out" / "report.html"
    rc = main(["compare", str(base), str(other), "--prompts", str(prompts), "-o", str(out), "--max-new-tokens", "6"])
    assert rc == 0
    return out, [str(base), str(other)]


def test_report_is_self_contained_and_escaped(report):
    out, models = report
    html = out.read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:)""", html)  # nothing fetched from anywhere
    images = re.findall(r'<img[^>]+src="(data:image/png;base64,[A-Za-z0-9+/=]+)"', html)
    assert len(images) == 1  # one set -> one plot
    assert all(model in html for model in models)
    assert "&lt;b&gt;city&lt;/b&gt;" in html and "<b>city</b>" not in html
    assert html.count('class="prompt-row"') == len(PROMPTS)


def test_compare_json_with_jsonl_prompts(report, tmp_path, capsys):
    _, models = report
    items = [{"id": "k", "prompt": "what is the capital of", "keywords": "the", "language": "en"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    out = tmp_path / "r.html"
    rc = main(["compare", *models, "--prompts", str(tmp_path / "p.jsonl"), "-o", str(out), "--json",
               "--max-new-tokens", "4"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    answer = json.loads(captured.out)
    assert answer["report"] == str(out) and out.is_file()
    # fields present in every item select the metrics: keyword + language, plus repetition always
    assert set(answer["scores"][models[0]]["p"]) >= {"keyword", "language", "repetition"}
    assert main(["compare", *models, "--prompts", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "r.txt")]) == 2


def test_render_handles_missing_scores():
    results = {"settings": {"model_order": ["a", "b"], "sets": {"s": {}}, "generation": {}},
               "scores": {"a": {"s": {"keyword": 0.5}}, "b": {"s": {"keyword": None}}},
               "items": [{"model": "a", "set": "s", "id": "1", "prompt": "p", "output": "o", "metrics": {"keyword": 0.5}}]}
    html = render_report(results)
    assert "0.500" in html and "–" in html


def _chromium(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=timeout, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report):
    out, models = report
    result = _chromium("--virtual-time-budget=5000", "--dump-dom", out.as_uri())
    dom = result.stdout
    assert "</html>" in dom, result.stderr[-2000:]
    # the page's own load handler counted the images that decoded
    check = re.search(r'id="image-check" data-loaded="(\d+)" data-total="(\d+)"', dom)
    assert check and check.group(1) == check.group(2) == "1", dom[-1500:]
    headers = re.findall(r'<th class="model-col" title="([^"]+)">', dom)
    assert headers == models  # every model has its column
    assert dom.count('class="prompt-row"') == len(PROMPTS)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_screenshot_is_not_blank(report, tmp_path):
    import matplotlib.image

    out, _ = report
    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,900", "--virtual-time-budget=5000", out.as_uri())
    assert shot.is_file()
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] == 900 and pixels.shape[1] == 1200
    assert float(pixels[..., :3].std()) > 0.05  # text, tables and the plot, not an empty page


MEASURE = ('<script>window.addEventListener("load", function () { var d = document.documentElement;'
           ' document.body.dataset.widths = d.scrollWidth + "/" + d.clientWidth; });</script></body>')


def page_widths(html_file: Path, tmp_path: Path) -> tuple[int, int]:
    """(scrollWidth, clientWidth) of a page in headless Chromium at 1280 px, measured by a copy
    of it with one more load handler."""
    probe = tmp_path / f"measured-{html_file.name}"
    probe.write_text(html_file.read_text(encoding="utf-8").replace("</body>", MEASURE), encoding="utf-8")
    dom = _chromium("--window-size=1280,900", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'data-widths="(\d+)/(\d+)"', dom)
    assert found, dom[-1500:]
    return int(found.group(1)), int(found.group(2))


def test_model_columns_are_labelled_by_the_shortest_unique_path():
    from skillgraft.report.html import short_labels

    assert short_labels(["/runs/k1/merged", "/runs/k5/merged", "/models/base"]) == ["k1/merged", "k5/merged", "base"]
    assert short_labels(["a/x/m", "b/x/m"]) == ["a/x/m", "b/x/m"]
    assert short_labels(["http://host:8000/v1", "out/"]) == ["v1", "out"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_a_wide_report_fits_a_1280_px_window(tmp_path):
    models = [f"/very/long/path/to/the/runs/of/a/study/seed-{n}/knowledge-kl-replay/merged" for n in range(6)]
    metrics = {f"metric_number_{m}": 0.5 for m in range(12)}
    items = [{"model": m, "set": "s", "id": "1", "prompt": "p " * 40, "output": "x" * 400 + " word" * 50,
              "metrics": metrics} for m in models]
    results = {"settings": {"model_order": models, "sets": {"s": {}}, "generation": {"chat": "auto"},
                            "models": {m: {"chat_applied": {"s": True}} for m in models}},
               "scores": {m: {"s": metrics} for m in models}, "items": items}
    html = render_report(results)
    assert "prompts: M1 chat template" in html and '"chat"' not in html  # the decoding line says what was applied
    assert ">M1: seed-0/knowledge-kl-replay/merged</th>" in html  # the shortest path telling the six apart
    page = tmp_path / "wide.html"
    page.write_text(html, encoding="utf-8")
    scroll, client = page_widths(page, tmp_path)
    assert scroll <= client, f"the page is {scroll} px wide in a {client} px window"
