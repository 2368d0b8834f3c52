"""The static site in a real headless Chromium: the right rows, sorting by a click, pictures that load."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rsbench.leaderboard import admission, site

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    """Debian's chromium driven by its chromium-driver; `.ci/run` installs both, so CI never skips."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver must be installed on CI (.ci/run installs them)")
        pytest.skip("chromium or chromium-driver is not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    yield chrome
    chrome.quit()


def rows(browser: object, table: str) -> list[str]:
    return [row.get_attribute("data-entry") for row in browser.find_elements("css selector", f"#{table} tbody tr")]


def index_rows(browser: object) -> list[list[str]]:
    """The index's rows as (version, entries, leader, top entry's best)."""
    return [[row.find_elements("css selector", "td")[i].text for i in (1, 5, 6, 7)]
            for row in browser.find_elements("css selector", "#tracks tbody tr")]


def ranks(browser: object) -> dict[str, str]:
    """A track page's rank column: entry -> rank interval."""
    return {row.get_attribute("data-entry"): row.find_elements("css selector", "td")[1].text
            for row in browser.find_elements("css selector", "#entries tbody tr")}


def test_site_tables_sort_on_click_and_pictures_load(browser: object, tmp_path: Path, ranked_tracks: Path,
                                                     make_evasion_run: Callable[..., Path]) -> None:
    root = tmp_path / "leaderboards"
    shutil.copytree(ranked_tracks, root)  # a tied track (smoothing-digits-1.00) and a dominated one (0.25)
    admission.add_run(root, make_evasion_run(tmp_path / "a", {"caa": [0.5, 0.6, 0.7, 0.8]}))
    admission.add_run(root, make_evasion_run(tmp_path / "b", {"pgd": [0.9, 0.2, 1.0, 1.1]}))
    admission.add_run(root, make_evasion_run(tmp_path / "c", {"deepfool": [0.55, 0.65, None, 0.4]}))
    admission.add_run(root, make_evasion_run(tmp_path / "d", {"pgd": [0.3, 0.2]}, judge_n=1000), new_version=True)
    admission.add_run(root, make_evasion_run(tmp_path / "e", {"deepfool": [0.3, 0.2]}, judge_n=1000))  # ties pgd
    site.render(root)
    summary = (root / "README.md").read_text()
    assert "| evasion-smoothing-digits-0.50 v1 (superseded) | 3 | tied: caa, pgd, deepfool | 50 [0, 100] |" in summary
    assert "| evasion-smoothing-digits-0.50 v2 | 2 | tied: pgd, deepfool | 100 [100, 100] |" in summary
    assert summary.count("Superseded by v2") == 1
    browser.get((root / "site" / "index.html").as_uri())
    assert index_rows(browser) == [["1", "2", "caa", "90 [75, 100]"],  # caa dominates on 0.25
                                   ["1 (superseded)", "3", "tied: caa, pgd, deepfool", "50 [0, 100]"],
                                   ["2", "2", "tied: pgd, deepfool", "100 [100, 100]"],
                                   ["1", "3", "tied: caa, deepfool", "50 [25, 75]"]]  # best on half each on 1.00
    assert "first alone in at least 95%" in browser.find_element("id", "legend").text
    assert "median radius (in the defense's norm)" in browser.find_element("tag name", "body").text  # metric legend
    entries = [h for h in browser.find_elements("css selector", "#tracks th") if h.text == "entries"][0]
    assert browser.execute_script("return getComputedStyle(arguments[0]).cursor", entries) == "pointer"  # site.css
    entries.click()  # ascending, stable: the two-entry tracks first
    assert [row[:2] for row in index_rows(browser)] == [["1", "2"], ["2", "2"], ["1 (superseded)", "3"], ["1", "3"]]
    browser.find_element("css selector", "#tracks a[href$='0.50-v2.html']").click()
    assert not browser.find_elements("id", "superseded")
    browser.back()
    browser.find_element("css selector", "#tracks a[href$='1.00-v1.html']").click()
    assert browser.find_element("id", "leader").text.startswith("Tied for first: caa, deepfool")
    assert ranks(browser) == {"caa": "1–2", "deepfool": "1–2", "pgd": "3"}  # overlapping rank intervals
    assert "p=1" in browser.find_element("id", "paired").text  # each beats the other on half the samples
    browser.back()
    browser.find_element("css selector", "#tracks a[href$='0.25-v1.html']").click()
    assert browser.find_element("id", "leader").text.startswith("Leader: caa (first alone in 100%")
    assert ranks(browser) == {"caa": "1", "deepfool": "2"}
    browser.back()
    browser.find_element("css selector", "#tracks a[href$='0.50-v1.html']").click()
    assert "Superseded by v2" in browser.find_element("id", "superseded").text
    assert rows(browser, "entries") == ["caa", "pgd", "deepfool"]  # by best: 50%, 25%, 25% (ties in order added)
    header = browser.find_elements("css selector", "#entries th")
    r50 = [h for h in header if h.text == "r50"][0]
    r50.click()  # ascending: pgd 0.95, caa 0.65, deepfool 0.55
    assert rows(browser, "entries") == ["deepfool", "caa", "pgd"]
    r50.click()
    assert rows(browser, "entries") == ["pgd", "caa", "deepfool"]
    success = [h for h in browser.find_elements("css selector", "#entries th") if h.text == "success"][0]
    success.click()  # deepfool's 75% below the others' 100%
    assert rows(browser, "entries")[0] == "deepfool"
    pictures = browser.find_elements("css selector", "img")
    assert len(pictures) == 2  # certified accuracy, attack proportion
    assert all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", p) > 100
               for p in pictures)


def test_defense_profiles_and_their_sortable_index(browser: object, tmp_path: Path,
                                                   make_evasion_run: Callable[..., Path]) -> None:
    import rsbench

    root = tmp_path / "leaderboards"
    admission.add_run(root, make_evasion_run(tmp_path / "a", {"caa": [0.5, 0.6, 0.7, 0.8]}))
    admission.add_run(root, make_evasion_run(tmp_path / "b", {"pgd": [0.9, 0.2, 1.0, 1.1]}))
    for goal, attack in (("evasion", "pgd-l2"), ("degradation", "degradation-pgd")):
        aol = Path(__file__).resolve().parents[1] / "submissions" / "defenses" / "aol-digits-graph"
        rsbench.evaluate(str(aol), attack, num_samples=4, out=tmp_path / goal, save_examples=True, progress=False)
        admission.add_run(root, tmp_path / goal)
    site.render(root)
    browser.get((root / "site" / "index.html").as_uri())
    browser.find_element("link text", "Defenses").click()
    defenses = lambda: [row.get_attribute("data-defense")  # noqa: E731
                        for row in browser.find_elements("css selector", "#defenses tbody tr")]
    assert defenses() == ["aol-digits-graph", "smoothing-digits-0.50"]
    header = {h.text: h for h in browser.find_elements("css selector", "#defenses th")}
    assert {"evasion: smallest r50", "degradation: FPR upper bound (%)", "VRA at epsilon (%)"} <= set(header)
    header["kind"].click()
    header["kind"].click()  # descending: smoothing before lipschitz
    assert defenses() == ["smoothing-digits-0.50", "aol-digits-graph"]
    row = browser.find_element("css selector", "#defenses tr[data-defense='smoothing-digits-0.50']")
    assert "0.65 [" in row.text  # the strongest r50: caa's 0.65 beats pgd's 0.95
    browser.find_element("link text", "aol-digits-graph").click()
    headlines = {r.get_attribute("data-headline"): r.text
                 for r in browser.find_elements("css selector", "#headlines tr[data-headline]")}
    assert {"clean", "certified", "robust_accuracy", "vra", "fpr_lower", "fpr_upper"} <= set(headlines)
    assert "pgd-l2 evasion-aol-digits-graph v1" in headlines["robust_accuracy"]
    browser.find_element("css selector", "#headlines tr[data-headline='fpr_lower'] a").click()
    assert browser.find_element("tag name", "h1").text == "degradation-aol-digits-graph v1"
