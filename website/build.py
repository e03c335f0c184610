"""Build the course site into ``_site/`` (run through ``.ci/build-site``).

1. Each notebook, executed: the copy in ``build/executed/`` that the test suite
   recorded, when its fingerprint matches the notebook and the library, or else
   a fresh run here (nbclient, the notebook's default, CPU-sized parameters).
2. Staged in ``build/site-src/``: README.md as the front page (the course map),
   the notebooks through :func:`website.pages.site_notebook` (each with a link to
   its lecture deck), the pages of ``docs/``, the stylesheet, plotly.js and MathJax.
3. Rendered by Sphinx + MyST-NB with ``website/conf.py``; a notebook page's
   download button hands out the notebook as it is in the repository.
4. One lecture deck per notebook in ``_site/slides/`` (reveal.js, code hidden,
   slides as the notebooks' slideshow metadata sets them), served like the
   pages from the site's own files: present it without a network.
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
from nbclient import NotebookClient

from tpo_core.teaching import twin_html
from website import assets
from website.decks import lecture_deck
from website.pages import (
    link_badges,
    record,
    recorded,
    site_notebook,
    twin_figures,
    with_deck_link,
)

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "build" / "executed"
STAGE = ROOT / "build" / "site-src"
HTML = ROOT / "build" / "html"  # Sphinx's output; MyST-NB keeps its files beside it in build/
OUT = ROOT / "_site"
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


def stage(notebooks: list[Path], recorded_only: bool) -> dict[str, nbformat.NotebookNode]:
    """Stage the site's sources; returns each notebook's site copy, by name, for its deck."""
    shutil.rmtree(STAGE, ignore_errors=True)
    (STAGE / "notebooks").mkdir(parents=True)
    twin_htmls = {name: twin_html(fig) for name, fig in twin_figures().items()}
    site_copies = {}
    for path in notebooks:
        nb, source = executed(path, recorded_only)
        site_copies[path.stem] = site_notebook(nb, twin_htmls)
        staged = with_deck_link(site_copies[path.stem], path.stem)
        nbformat.write(staged, STAGE / "notebooks" / path.name)
        print(f"  {path.name}: {source}", flush=True)
    shutil.copytree(ROOT / "docs", STAGE / "docs")
    shutil.copy(ROOT / "website" / "conf.py", STAGE / "conf.py")
    shutil.copytree(ROOT / "website" / "_static", STAGE / "_static")
    shutil.copy(assets.plotly_js(), STAGE / "_static")
    assets.copy_mathjax(STAGE / "_static" / "mathjax")
    course = "\n".join(f"notebooks/{p.stem}" for p in notebooks)
    reference = "\n".join(f"docs/{page}" for page in PAGES)
    front = link_badges((ROOT / "README.md").read_text())
    front += TOCTREE.format(caption="Course", entries=course)
    front += TOCTREE.format(caption="Reference", entries=reference)
    (STAGE / "index.md").write_text(front)
    return site_copies


def write_decks(site_copies: dict[str, nbformat.NotebookNode]) -> list[Path]:
    """A reveal.js deck per notebook in ``_site/slides/``, beside the reveal.js it loads."""
    slides = OUT / "slides"
    assets.copy_reveal(slides / "reveal.js")
    decks = []
    for stem, nb in site_copies.items():
        deck = slides / f"{stem}.slides.html"
        deck.write_text(lecture_deck(nb), "utf-8")
        decks.append(deck)
    return decks


def hand_out_notebooks(notebooks: list[Path]) -> None:
    """The download button serves ``_sources/``: there, each notebook as the repository has it
    (a student's starting point, a few kB) rather than the site's rendered copy."""
    for path in notebooks:
        shutil.copy(path, OUT / "_sources" / "notebooks" / path.name)


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def repository() -> str:
    return pyproject()["project"]["urls"]["Repository"]


def launch_ref() -> str:
    """The ref the Binder and Colab buttons open ([tool.tpo-notebooks] ref)."""
    return pyproject()["tool"]["tpo-notebooks"]["ref"]


def report(out: Path) -> None:
    """The site's total size and its largest pages."""
    files = [p for p in out.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    pages = sorted((p for p in files if p.suffix == ".html"), key=lambda p: -p.stat().st_size)
    print(f"site: {len(files)} files, {total / 1e6:.1f} MB in all; largest pages:")
    for page in pages[:5]:
        print(f"  {page.relative_to(out)}: {page.stat().st_size / 1e6:.2f} MB")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recorded-only",
        action="store_true",
        help="fail rather than execute a notebook the test suite has not just recorded",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    assets.install()
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    print(f"staging {len(notebooks)} notebooks and {len(PAGES)} pages", flush=True)
    site_copies = stage(notebooks, args.recorded_only)
    for folder in (HTML, OUT):
        shutil.rmtree(folder, ignore_errors=True)
    env = dict(os.environ, TPO_REPOSITORY=repository(), TPO_REF=launch_ref())
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going"]
    cmd += ["-d", str(ROOT / "build" / "doctrees"), str(STAGE), str(HTML)]
    subprocess.run(cmd, env=env, check=True)
    shutil.move(HTML, OUT)
    hand_out_notebooks(notebooks)
    decks = write_decks(site_copies)
    print(f"built the site and {len(decks)} lecture decks into _site/ in ", end="")
    print(f"{time.perf_counter() - start:.0f} s")
    report(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
