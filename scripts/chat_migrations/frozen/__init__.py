"""The schema as it was: the baselines' SQL and what 100_converged left.

Never edited once shipped; revisions may import these.
"""
