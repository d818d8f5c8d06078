"""The workflow around the matcher (issue 14): tenant members, scheduled runs, the exceptions
workflow (assignment, ageing, resolution codes) and period sign-off.

Models live in `models.py` here and belong to the reconciliation app (imported at the end of
reconciliation/models.py). Services are one module per concern; `api.py` holds their endpoints.
"""
