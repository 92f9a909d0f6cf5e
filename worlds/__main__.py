"""`python -m worlds WORLD [COMMAND] [--flags]`.

Each world module exposes `COMMANDS`, a dict of Fire commands whose first entry is the
default, so `python -m worlds kart --split train` generates and
`python -m worlds kart gallery` draws a contact sheet.
"""

from __future__ import annotations

import importlib
import sys

import fire

WORLDS = {
    "kart": "worlds.kart",
    "shapes": "worlds.shapes",
    "balls": "worlds.balls",
    "robot": "worlds.robot",
}


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip())
        print("\nworlds: " + ", ".join(WORLDS))
        return
    name, rest = argv[0], argv[1:]
    if name not in WORLDS:
        sys.exit(f"error: unknown world {name!r}; choose one of: {', '.join(WORLDS)}")
    commands = importlib.import_module(WORLDS[name]).COMMANDS
    command = next(iter(commands))
    if rest and rest[0] in commands:
        command, rest = rest[0], rest[1:]
    fire.Fire(commands[command], command=rest, name=f"worlds {name} {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
