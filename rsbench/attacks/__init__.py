"""Attacks, one module per attack (foolbox-style): a Params model and a `run` that proposes candidates.

`base` holds the interface and the `Tracker` through which the harness, never the attack, judges success;
`losses`, `steps` and `success` are what several attacks share. Each registry entry under `registry/attacks/`
names its class here as `module:Class`, resolved on use. Attacks may import the core below them (specs, stats,
defenses); never the leaderboard, submissions, gate or cli.
"""
