"""The schema at head: the models, the tables, the functions' contract.

Changes with every new revision; no revision imports it.
"""
