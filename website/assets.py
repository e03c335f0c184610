"""The front-end files the site and its lecture decks serve themselves: no page loads a CDN.

* plotly.js from the plotly package, the copy its figures were made with;
* MathJax 3 and reveal.js from their npm packages, at the versions and checksums of
  ``website/package-lock.json`` (``npm ci`` installs them into ``website/node_modules``).

Only what the pages use is copied: MathJax's one combined TeX-to-HTML file (every TeX
extension built in, so nothing is fetched on demand) and its web fonts, about 1.7 MB
of MathJax's 24; reveal.js's script, its style, the white theme with its font and the
speaker-notes plugin.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import plotly

WEBSITE = Path(__file__).resolve().parent
NODE_MODULES = WEBSITE / "node_modules"
MATHJAX_SCRIPT = "tex-chtml-full.js"
MATHJAX_FILES = [MATHJAX_SCRIPT, "output/chtml/fonts/woff-v2"]  # in the package's es5/
REVEAL_FILES = [  # in the reveal.js package
    "dist/reveal.js",
    "dist/reveal.css",
    "dist/theme/white.css",
    "dist/theme/fonts/source-sans-pro/source-sans-pro.css",
    "dist/theme/fonts/source-sans-pro/*.woff",
    "dist/theme/fonts/source-sans-pro/LICENSE",
    "plugin/notes/notes.js",
]


def locked_versions() -> dict[str, str]:
    """The npm packages and versions that ``package-lock.json`` pins."""
    lock = json.loads((WEBSITE / "package-lock.json").read_text())
    prefix = "node_modules/"
    return {
        key[len(prefix) :]: entry["version"]
        for key, entry in lock["packages"].items()
        if key.startswith(prefix)
    }


def installed_versions() -> dict[str, str | None]:
    versions = {}
    for name in locked_versions():
        manifest = NODE_MODULES / name / "package.json"
        versions[name] = json.loads(manifest.read_text())["version"] if manifest.exists() else None
    return versions


def install() -> None:
    """``npm ci`` in ``website/`` unless the locked versions are already there."""
    if installed_versions() == locked_versions():
        return
    if shutil.which("npm") is None:
        raise SystemExit("the site needs Node's npm to install MathJax and reveal.js (npm ci)")
    cmd = ["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(WEBSITE)]
    subprocess.run(cmd, check=True)


def _copy(source: Path, patterns: list[str], dest: Path) -> None:
    for pattern in patterns:
        matches = sorted(source.glob(pattern))
        if not matches:
            raise FileNotFoundError(f"{source / pattern}: not in the installed package")
        for path in matches:
            target = dest / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, target, dirs_exist_ok=True)
            else:
                shutil.copy2(path, target)


def copy_mathjax(dest: Path) -> None:
    """MathJax's combined TeX + CHTML file and its fonts into ``dest`` (``_static/mathjax``)."""
    _copy(NODE_MODULES / "mathjax" / "es5", MATHJAX_FILES, dest)


def copy_reveal(dest: Path) -> None:
    """reveal.js's files a deck loads into ``dest`` (``slides/reveal.js``)."""
    _copy(NODE_MODULES / "reveal.js", REVEAL_FILES, dest)


def plotly_js() -> Path:
    """plotly.js as the installed plotly package ships it (the version its figures expect)."""
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
