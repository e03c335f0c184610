"""Sphinx configuration of the course site; ``.ci/build-site`` copies it into the staged sources.

The repository address comes from ``pyproject.toml`` (``[project.urls]``), the one
place it lives, through the ``TPO_REPOSITORY`` variable the build sets. Nothing on
a page is fetched from another site: plotly.js, MathJax and the theme's fonts are
served from ``_static``.
"""

import os

repository = os.environ["TPO_REPOSITORY"]  # https://github.com/OWNER/NAME

project = "tpo-notebooks"
author = "the tpo-notebooks authors"
copyright = "the tpo-notebooks authors, MIT licence"
extensions = ["myst_nb", "sphinx-mathjax-offline"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# The notebooks arrive executed; MyST-NB renders their outputs as they are.
nb_execution_mode = "off"
nb_ipywidgets_js = {}  # explorers are replaced by notes and kernel-free twins
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

html_theme = "sphinx_book_theme"
html_title = "TPO notebooks"
html_static_path = ["_static"]
html_js_files = ["plotly.min.js"]  # once per page, from this site; figures call window.Plotly
html_css_files = ["site.css"]
html_copy_source = False  # the notebooks are one launch button away
html_theme_options = {
    "repository_url": repository,
    "repository_branch": "main",
    "path_to_docs": "",
    "use_repository_button": True,
    "use_download_button": False,  # the original notebooks: repository and launch buttons
    "launch_buttons": {
        "binderhub_url": "https://mybinder.org",
        "colab_url": "https://colab.research.google.com",
        "notebook_interface": "jupyterlab",
    },
    "show_toc_level": 2,
    "home_page_in_toc": True,
}
html_context = {"default_mode": "light"}  # readers can switch; projectors like light
