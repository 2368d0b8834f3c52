"""Defense profiles say where a defense comes from: who made it, its paper, licence, architecture and size,
its training, and the date and rsbench commit of every number; read from the committed tracks."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import yaml

from rsbench.leaderboard import profiles, track_files
from rsbench.leaderboard.about import about
from rsbench.leaderboard.track_table import cell
from rsbench.submissions import defense_submissions

REPO = Path(__file__).resolve().parents[1]


def about_list(page: str) -> dict[str, str]:
    """The profile's About list, each entry's text without its tags."""
    found = re.findall(r'<dd data-about="([^"]+)">(.*?)</dd>', page)
    return {key: html.unescape(re.sub(r"<[^>]+>", "", value)) for key, value in found}


def newest(track: str) -> profiles.Track:
    path = track_files.latest(REPO / "leaderboards", track)
    assert path is not None
    return profiles.Track(path, track_files.load(path), f"{track}-{path.stem}")


def test_the_aol_digits_profile_says_who_made_it_what_it_is_and_when_each_number_was_measured() -> None:
    tracks = [newest(f"{goal}-aol-digits") for goal in ("evasion", "degradation", "spoofing")]
    page = profiles.page(profiles.profile("aol-digits", tracks, REPO / "submissions"), cell, "", "")
    about = about_list(page)
    assert about["authors"] == "rsbench maintainers (reimplementation of the paper's AOL layers on digits)"
    assert about["paper"] == "https://arxiv.org/abs/2208.03160" and about["licence"] == "MIT"
    assert about["architecture"] == "python:./aol.py:build (width 128, depth 3), 42,634 numbers in 8 tensors"
    assert about["training"] == "submissions/defenses/aol-digits/train.py" and about["model card"] == "not given"
    entry = tracks[0].board.entries[0]
    assert f"<td>{entry.date[:10]}</td><td><code>{entry.environment.git_commit[:12]}</code></td>" in page


def test_a_registry_defense_s_profile_names_its_method_s_paper_recipe_and_card() -> None:
    tracks = [newest(f"{goal}-smoothing-digits-0.50") for goal in ("evasion", "degradation")]
    about = about_list(profiles.page(profiles.profile("smoothing-digits-0.50", tracks, REPO / "submissions"), cell,
                                     "", ""))
    assert about["authors"] == "method: Cohen, Rosenfeld, Kolter; weights: trained by rsbench"
    assert about["paper"] == "https://arxiv.org/abs/1902.02918 (ICML 2019)" and about["licence"] == "MIT (rsbench)"
    assert about["architecture"] == "digits-cnn, 38,282 numbers in 8 tensors"
    assert '"recipe": "gaussian"' in about["training"]
    assert about["model card"] == "rsbench/weights/smoothing-digits-0.50.md"


def test_a_submitted_defense_may_say_where_its_paper_appeared(tmp_path: Path) -> None:
    folder = tmp_path / "submissions" / "defenses" / "aol-digits-graph"
    shutil.copytree(REPO / "submissions" / "defenses" / "aol-digits-graph", folder)
    data = yaml.safe_load((folder / "submission.yaml").read_text())
    (folder / "submission.yaml").write_text(yaml.safe_dump({**data, "venue": "ECCV 2022"}))
    submission = defense_submissions.load(folder)
    assert submission.venue == "ECCV 2022"
    assert about(submission.defense, tmp_path / "submissions").venue == "ECCV 2022"
    elsewhere = about(submission.defense, None)  # without its folder, nothing says who made a plugin
    assert (elsewhere.authors, elsewhere.paper, elsewhere.licence) == ("not given", None, None)
