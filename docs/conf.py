"""Sphinx configuration: the API reference is generated from cnncore's numpydoc docstrings.

Build (from the repository root, with cnncore installed or built in place):

    pip install ".[docs]" && sphinx-build -W -b html docs docs/_build/html
"""

import cnncore

project = "cnncore"
author = "cnncore developers"
copyright = "cnncore developers, MIT license"
release = version = cnncore.__version__

extensions = ["sphinx.ext.autodoc", "numpydoc"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []

# numpydoc renders the Parameters/Returns sections; type hints stay in the signatures
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# "See Also" entries name functions of the same module or of cnncore
numpydoc_validation_checks: set[str] = set()
default_role = "py:obj"
nitpicky = False
suppress_warnings = ["ref.python"]  # the same op is documented once, re-exported elsewhere
