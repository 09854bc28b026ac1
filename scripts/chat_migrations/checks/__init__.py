"""The read-only checks an operator runs: validate, preflight, drift, adopt.
"""
