"""The inference service: predictions and SHAP explanations from registered models.

No durable state: a model cache (``cache.py``) and a selector cache (``resolver.py``) kept
fresh by the registry's ``model.*`` events. See ``domain.py`` for the pipeline and
``inputs.py`` for how request rows are decoded and validated.
"""
