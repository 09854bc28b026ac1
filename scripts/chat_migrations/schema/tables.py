"""The chat tables, named once for the checks, the harness and the tests.

Revisions do not import this: each names the tables it changes itself, so a
later change here never rewrites what an old revision does.
"""

SCHEMA = "public"
NAMES = ("chats", "chat_participants", "chat_messages")
QUALIFIED = tuple(f"{SCHEMA}.{name}" for name in NAMES)
