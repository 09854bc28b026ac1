"""The harness: local clusters, lookalike databases, seed data, bulk load, rehearsal, the local job, benchmarks.
"""
