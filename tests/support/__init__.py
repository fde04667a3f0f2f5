"""Code the tests share, as importable modules.

Under ``--import-mode=importlib`` a test module cannot import a ``conftest.py``, so helpers
live here and each folder's ``conftest.py`` keeps only its fixtures, built on these.
"""
