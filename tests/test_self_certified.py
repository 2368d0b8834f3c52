"""A self-certified defense (a plugin: its certificates are its own code's) is labelled so beside its numbers, in its
tracks' protocol line and on its profile, and ranked apart from the defenses rsbench certifies."""

from __future__ import annotations

from pathlib import Path

from rsbench.leaderboard import profiles, track_files
from rsbench.leaderboard.track_table import protocol_line
from rsbench.specs import SELF_CERTIFIED

ROOT = Path(__file__).resolve().parents[1] / "leaderboards"


def board_of(track: str) -> profiles.Track:
    path = ROOT / track / "v1.json"
    return profiles.Track(path, track_files.load(path), f"{track}-v1")


def test_a_plugins_tracks_and_profile_say_self_certified_and_rank_it_apart() -> None:
    plugin, certified = board_of("evasion-aol-digits"), board_of("evasion-gloro-digits-0.25")
    assert plugin.board.defense.self_certified and not certified.board.defense.self_certified
    assert protocol_line(plugin.board).endswith(f"; {SELF_CERTIFIED}")
    assert "self-certified" not in protocol_line(certified.board)
    page = profiles.index([profiles.Profile("aol-digits", reference=plugin),
                           profiles.Profile("gloro-digits-0.25", reference=certified)], str, "", "")
    ranked, apart = page.split('<table class="sortable" id="defenses">')[1].split("<h2>Self-certified defenses</h2>")
    assert 'data-defense="gloro-digits-0.25"' in ranked and "aol-digits" not in ranked
    assert 'id="self-certified"' in apart and 'data-defense="aol-digits"' in apart
