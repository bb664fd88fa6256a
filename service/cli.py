"""The ``foldserve`` command: ``fold`` a model, ``serve`` the model repository."""

from __future__ import annotations

import sys

from folding.cli import add_fold_command, run


def main(argv: list[str] | None = None) -> int:
    return run(argv, [add_fold_command])


if __name__ == "__main__":
    sys.exit(main())
