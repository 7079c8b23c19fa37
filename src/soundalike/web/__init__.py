"""The web front end: a FastAPI app (:mod:`soundalike.web.app`) over a search backend
(:mod:`soundalike.web.backends`), with a static page in ``static/``. Run it with
``soundalike web --conf conf/local.yaml``.
"""
