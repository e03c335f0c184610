"""Sphinx configuration of the course site; ``.ci/build-site`` copies it into the staged sources.

The repository address and the ref students launch from come from ``pyproject.toml``, the
one place they live, through the ``TPO_REPOSITORY`` and ``TPO_REF`` variables
the build sets. Nothing on a page is fetched from another site: plotly.js (on the
pages that draw figures), MathJax (on the pages with math) and the theme's fonts are
served from ``_static``.
"""

import os

repository = os.environ["TPO_REPOSITORY"]  # https://github.com/OWNER/NAME
launch_ref = os.environ.get("TPO_REF", "main")  # the ref Binder builds and Colab opens

project = "tpo-notebooks"
author = "the tpo-notebooks authors"
copyright = "the tpo-notebooks authors, MIT licence"
extensions = ["myst_nb"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# The notebooks arrive executed; MyST-NB renders their outputs as they are. A markdown
# output (Table 3 with display(Markdown(...))) is MyST, as JupyterLab shows it: tables, math.
nb_execution_mode = "off"
nb_ipywidgets_js = {}  # explorers are replaced by notes and kernel-free twins
nb_merge_streams = True
nb_render_markdown_format = "myst"
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

mathjax_path = "mathjax/tex-chtml-full.js"  # in _static, copied by website/assets.py

html_theme = "sphinx_book_theme"
html_title = "TPO notebooks"
html_static_path = ["_static"]
html_css_files = ["site.css"]
html_copy_source = True  # the download button's files; the build puts the notebooks there
html_theme_options = {
    "repository_url": repository,
    "repository_branch": "main",
    "path_to_docs": "",
    "use_repository_button": True,
    "use_download_button": True,  # the notebook as in the repository, or the page as a PDF
    "launch_buttons": {
        "binderhub_url": "https://mybinder.org",
        "colab_url": "https://colab.research.google.com",
        "notebook_interface": "jupyterlab",
    },
    "show_toc_level": 2,
    "home_page_in_toc": True,
}
html_context = {"default_mode": "light"}  # readers can switch; projectors like light


def plotly_where_drawn(app, pagename, templatename, context, doctree):
    """plotly.js (4.6 MB) only on the pages that draw a figure."""
    if "plotly-graph-div" in context.get("body", ""):
        app.builder.add_js_file("plotly.min.js")


def launch_from_the_ref(app, pagename, templatename, context, doctree):
    """The Binder and Colab buttons open the ref an instructor sets (the theme writes ``main``)."""
    for group in context.get("header_buttons", []):
        for button in group.get("buttons", []):
            url = button.get("url", "")
            if url.startswith("https://mybinder.org/"):
                button["url"] = url.replace("/main?urlpath=", f"/{launch_ref}?urlpath=", 1)
            elif url.startswith("https://colab.research.google.com/"):
                button["url"] = url.replace("/blob/main/", f"/blob/{launch_ref}/", 1)


def setup(app):
    app.connect("html-page-context", plotly_where_drawn)
    app.connect("html-page-context", launch_from_the_ref, priority=600)
