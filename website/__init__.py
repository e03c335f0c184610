"""The course site's tooling: pages, lecture decks, docs generators and front-end assets.

Not part of the learner package (``tpo_core``): it needs nbformat, nbconvert and
Sphinx, which only the ``site`` and ``test`` extras install. Run from the
repository root: ``python -m website.build`` (what ``.ci/build-site`` does) and
``python -m website.docs_pages``.
"""
