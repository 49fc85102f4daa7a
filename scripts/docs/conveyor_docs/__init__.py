"""The docs site's build-time code: the generated reference pages and the stale-reference checks.

``scripts/docs/gen_pages.py`` (mkdocs-gen-files) writes the pages with the ``*_page`` modules;
``scripts/docs/hooks.py`` (an MkDocs hook) runs :mod:`conveyor_docs.refcheck` on every page.
"""
