"""Build the course site into ``_site/`` (run through ``.ci/build-site``).

1. Each notebook, executed: the copy in ``build/executed/`` that the test suite
   recorded, when its fingerprint matches the notebook and the library, or else
   a fresh run here (nbclient, the notebook's default, CPU-sized parameters).
2. Staged in ``build/site-src/``: README.md as the front page (the course map),
   the notebooks through :func:`tpo_core.teaching.site.site_notebook`, the pages
   of ``docs/``, plotly.js and the stylesheet.
3. Rendered by Sphinx + MyST-NB with ``website/conf.py``.
4. One lecture deck per notebook in ``build/slides/`` (``nbconvert --to slides``,
   code hidden, slides as the notebooks' slideshow metadata sets them). Unlike
   the site, a deck loads reveal.js, MathJax and plotly.js from their CDNs:
   present it online.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import nbformat
import plotly
from nbclient import NotebookClient

from tpo_core.teaching import twins
from tpo_core.teaching.site import (
    lecture_deck,
    link_badges,
    record,
    recorded,
    site_notebook,
    twin_figures,
)

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "build" / "executed"
STAGE = ROOT / "build" / "site-src"
HTML = ROOT / "build" / "html"  # Sphinx's output; MyST-NB keeps its files beside it in build/
OUT = ROOT / "_site"
SLIDES = ROOT / "build" / "slides"
PAGES = ["GLOSSARY", "REFRESHER", "SOLUTIONS", "INSTRUCTORS", "SLIDES"]  # docs/, in nav order
TOCTREE = """

```{{toctree}}
:hidden:
:caption: {caption}

{entries}
```
"""


def executed(path: Path, recorded_only: bool = False) -> tuple[nbformat.NotebookNode, str]:
    """The notebook with its outputs, and where they came from."""
    nb = recorded(path, EXECUTED)
    if nb is not None:
        return nb, "recorded outputs (test suite or an earlier build)"
    if recorded_only:
        sys.exit(f"{path.name}: no current recording in {EXECUTED} (run the notebook tests first)")
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    resources = {"metadata": {"path": str(path.parent)}}
    NotebookClient(nb, timeout=600, store_widget_state=False, resources=resources).execute()
    record(nb, path, EXECUTED)
    return nb, f"executed in {time.perf_counter() - start:.0f} s"


def stage(notebooks: list[Path], recorded_only: bool) -> None:
    shutil.rmtree(STAGE, ignore_errors=True)
    (STAGE / "notebooks").mkdir(parents=True)
    twin_htmls = {name: twins.twin_html(fig) for name, fig in twin_figures().items()}
    for path in notebooks:
        nb, source = executed(path, recorded_only)
        nbformat.write(site_notebook(nb, twin_htmls), STAGE / "notebooks" / path.name)
        print(f"  {path.name}: {source}", flush=True)
    shutil.copytree(ROOT / "docs", STAGE / "docs")
    shutil.copy(ROOT / "website" / "conf.py", STAGE / "conf.py")
    shutil.copytree(ROOT / "website" / "_static", STAGE / "_static")
    shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", STAGE / "_static")
    course = "\n".join(f"notebooks/{p.stem}" for p in notebooks)
    reference = "\n".join(f"docs/{page}" for page in PAGES)
    front = link_badges((ROOT / "README.md").read_text())
    front += TOCTREE.format(caption="Course", entries=course)
    front += TOCTREE.format(caption="Reference", entries=reference)
    (STAGE / "index.md").write_text(front)


def build_decks(notebooks: list[Path]) -> list[Path]:
    """A reveal.js deck per staged notebook."""
    shutil.rmtree(SLIDES, ignore_errors=True)
    SLIDES.mkdir(parents=True)
    decks = []
    for path in notebooks:
        deck = SLIDES / f"{path.stem}.slides.html"
        deck.write_text(lecture_deck(nbformat.read(STAGE / "notebooks" / path.name, 4)), "utf-8")
        decks.append(deck)
    return decks


def repository() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recorded-only",
        action="store_true",
        help="fail rather than execute a notebook the test suite has not just recorded",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    print(f"staging {len(notebooks)} notebooks and {len(PAGES)} pages", flush=True)
    stage(notebooks, args.recorded_only)
    for folder in (HTML, OUT):
        shutil.rmtree(folder, ignore_errors=True)
    env = dict(os.environ, TPO_REPOSITORY=repository())
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going"]
    cmd += ["-d", str(ROOT / "build" / "doctrees"), str(STAGE), str(HTML)]
    subprocess.run(cmd, env=env, check=True)
    shutil.move(HTML, OUT)
    decks = build_decks(notebooks)
    print(f"wrote {len(decks)} lecture decks into {SLIDES.relative_to(ROOT)}/")
    pages = sorted(OUT.rglob("*.html"))
    print(f"built {len(pages)} pages into _site/ in {time.perf_counter() - start:.0f} s")
    for page in pages:
        if page.parent.name in ("notebooks", "docs") or page.name == "index.html":
            print(f"  {page.relative_to(OUT)}: {page.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
