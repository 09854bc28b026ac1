"""The schema the revisions promise: the chain and the fold of its declarations, the models, the tables.

No revision imports it: each declares its own promises (chat_migrations.runtime.promises).
"""
