"""The source tree a release is built from: README links that work off the repository, and the
project's public URLs in its metadata.

    python -m scripts.release_source --repository https://github.com/OWNER/pointrend --ref v0.3.0 DEST
    python -m build DEST   # -> DEST/dist/pointrend-*.whl and .tar.gz

A package index shows the README as the package's description, where links and images relative
to the repository point nowhere. This copies what the package is built from (``pyproject.toml``,
``README.md``, ``LICENSE``, ``src/``) into ``DEST``, rewrites every relative link of the README to
``REPOSITORY/blob/REF/PATH`` and every relative image to ``REPOSITORY/raw/REF/PATH`` (the layout
GitHub and GitLab serve), and adds ``[project.urls]`` (Homepage, Source, Documentation, Issues)
to the copy's ``pyproject.toml``. The checkout itself is left as it is: its README keeps the
relative paths that render in the repository.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FILES = ("pyproject.toml", "README.md", "LICENSE")

# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
MARKDOWN_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
ABSOLUTE = re.compile(r"^([a-z][a-z0-9+.-]*:|#|/)", re.IGNORECASE)


def absolute_links(markdown: str, repository: str, ref: str) -> str:
    """``markdown`` with each relative link and image made absolute (see the module docstring)."""
    base = repository.rstrip("/")

    def rewrite(match: re.Match) -> str:
        bang, text, target = match.groups()
        if ABSOLUTE.match(target):
            return match.group(0)
        kind = "raw" if bang else "blob"
        return f"{bang}[{text}]({base}/{kind}/{ref}/{target.removeprefix('./')})"

    return MARKDOWN_LINK.sub(rewrite, markdown)


def project_urls(repository: str, ref: str) -> str:
    """The ``[project.urls]`` table of a release."""
    base = repository.rstrip("/")
    return (
        "\n[project.urls]\n"
        f'Homepage = "{base}"\n'
        f'Source = "{base}"\n'
        f'Documentation = "{base}/blob/{ref}/docs/models.md"\n'
        f'Issues = "{base}/issues"\n'
    )


def write_release_source(dest: Path, repository: str, ref: str, root: Path = ROOT) -> Path:
    """Copy the package's sources from ``root`` to ``dest`` (which must not exist), prepared for
    a release at ``repository`` / ``ref``; returns ``dest``."""
    if not re.match(r"^https://[^\s/]+/\S+$", repository):
        raise ValueError(f"--repository must be an https:// address, got {repository!r}")
    if dest.exists():
        raise FileExistsError(f"{dest} exists: give a new folder for the release source")
    if "[project.urls]" in (root / "pyproject.toml").read_text():
        raise ValueError(f"{root / 'pyproject.toml'} already has [project.urls]")
    dest.mkdir(parents=True)
    for name in PACKAGE_FILES:
        shutil.copy(root / name, dest / name)
    ignore = shutil.ignore_patterns("*.egg-info", "__pycache__")
    shutil.copytree(root / "src", dest / "src", ignore=ignore)
    readme = dest / "README.md"
    readme.write_text(absolute_links(readme.read_text(), repository, ref))
    with (dest / "pyproject.toml").open("a") as f:
        f.write(project_urls(repository, ref))
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path, help="a new folder for the release source")
    parser.add_argument("--repository", required=True, help="the public repository's https address")
    parser.add_argument("--ref", required=True, help="the release's tag or commit, e.g. v0.3.0")
    args = parser.parse_args(argv)
    try:
        write_release_source(args.dest, args.repository, args.ref)
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"release source in {args.dest}: build it with `python -m build {args.dest}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
