"""Realistic, deterministic rows for lookalike databases.

The same seed gives the same rows (ids from uuid5), so the tests can compare
checksums before and after a migration. The default size matches the plan's
evidence: 183 messages, every one with its seq (assigned by the trigger).
"""

from __future__ import annotations

import random
import uuid

NAMESPACE = uuid.UUID("6f1c0a52-8a0e-4d0b-9d51-3c0a9b7e2f10")


def _id(kind: str, number: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{kind}-{number}"))


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def seed_sql(*, users: int = 12, chats: int = 8, messages: int = 183, seed: int = 7) -> str:
    """INSERT statements: users, chats of very different sizes, participants, messages."""
    rng = random.Random(seed)
    lines: list[str] = []
    lines.append(
        "INSERT INTO auth.users (id, email, created_at) VALUES "
        + ", ".join(
            f"('{_id('user', u)}', 'user{u}@example.test', timestamptz '2025-09-01 00:00+00' + interval '{u} hours')"
            for u in range(users)
        )
        + ";"
    )
    members: dict[int, list[int]] = {}
    chat_rows, participant_rows = [], []
    for c in range(chats):
        size = 2 if c % 3 else rng.randint(3, users)
        members[c] = rng.sample(range(users), size)
        chat_rows.append(
            f"('{_id('chat', c)}', {_quote(f'Chat {c}') if size > 2 else 'NULL'}, {str(size > 2).lower()}, "
            f"'{_id('user', members[c][0])}', timestamptz '2025-09-02 00:00+00' + interval '{c} days')"
        )
        for u in members[c]:
            read_at = "NULL" if rng.random() < 0.2 else f"timestamptz '2025-10-01 00:00+00' + interval '{rng.randint(0, 240)} hours'"
            participant_rows.append(f"('{_id('participant', c * 1000 + u)}', '{_id('chat', c)}', '{_id('user', u)}', {read_at})")
    lines.append("INSERT INTO public.chats (id, title, is_group, created_by, created_at) VALUES " + ", ".join(chat_rows) + ";")
    lines.append(
        "INSERT INTO public.chat_participants (id, chat_id, user_id, last_read_at) VALUES "
        + ", ".join(participant_rows) + ";"
    )
    # Busy chats get most messages: weights fall off steeply with the chat number.
    weights = [1.0 / (c + 1) ** 1.5 for c in range(chats)]
    sent_in: dict[int, list[int]] = {c: [] for c in range(chats)}
    for m in range(messages):
        c = rng.choices(range(chats), weights)[0]
        sender = rng.choice(members[c])
        reply = f"'{_id('message', rng.choice(sent_in[c]))}'" if sent_in[c] and rng.random() < 0.15 else "NULL"
        status = rng.choice(["sent", "delivered", "read", "read"])
        deleted = "timestamptz '2025-10-11 00:00+00'" if rng.random() < 0.03 else "NULL"
        media = "ARRAY['https://cdn.example.test/m/" + str(m) + ".jpg']" if rng.random() < 0.1 else "NULL"
        lines.append(
            "INSERT INTO public.chat_messages (id, chat_id, sender_id, message_text, client_generated_id, status, "
            "reply_to_message_id, media_urls, created_at, deleted_at) VALUES "
            f"('{_id('message', m)}', '{_id('chat', c)}', '{_id('user', sender)}', {_quote(f'message {m} in chat {c}')}, "
            f"'{_id('client', m)}', '{status}', {reply}, {media}, "
            f"timestamptz '2025-10-01 00:00+00' + interval '{m * 37} minutes', {deleted});"
        )
        sent_in[c].append(m)
    return "\n".join(lines)
