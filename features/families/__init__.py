"""Feature families: one module per family, each a pure function of a customer history as of a cutoff.

Every family module declares ``NAME``, ``schema(config)`` (its columns as
:class:`~features.spec.FeatureSpec`) and ``columns(history, config)`` (their values, aligned with
``history.ids``). The BTYD family also needs the population parameters: ``columns(history, config,
params)`` and ``fit(history, config)``.

A new family is a new module here with those three names, plus one line in :data:`FAMILIES`; its
columns then appear in :func:`features.schema.feature_schema`, in every feature frame and in the
feature-set id.
"""

from features.families import attributes, btyd, engagement, gaps, rfm, windows

#: The families in the column order of :func:`features.build.build_features`.
FAMILIES = {module.NAME: module for module in (rfm, windows, gaps, engagement, attributes, btyd)}

__all__ = ["FAMILIES"]
