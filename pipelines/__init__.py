"""Spark stages of soundalike (installed as the ``soundalike_pipelines`` package).

Spark only moves rows; every piece of audio logic is a call into :mod:`soundalike`.
"""
