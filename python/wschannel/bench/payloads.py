"""What the benchmarks send: random binary payloads, an ASCII text payload and a JSON corpus.

Everything is derived from fixed seeds, so every implementation and every run sends the same
bytes.
"""

from __future__ import annotations

import json
import random

#: The payload sizes of the echo cells, in bytes.
SIZES = (16, 256, 8 << 10, 64 << 10, 1 << 20)
#: The size of the text cell.
TEXT_SIZE = 256
#: Messages of the JSON corpus (cycled through by the compression cells).
CORPUS_MESSAGES = 64


def binary(size: int) -> bytes:
    """``size`` random bytes (incompressible, as most binary payloads are)."""
    return random.Random(size).randbytes(size)


def text(size: int) -> str:
    """``size`` ASCII characters: letters, digits and spaces."""
    rng = random.Random(-size)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789     "
    return "".join(rng.choice(alphabet) for _ in range(size))


def json_corpus(count: int = CORPUS_MESSAGES) -> list[str]:
    """``count`` JSON documents of 1 to 4 KiB shaped like an API's event feed.

    Keys repeat, values vary: the redundancy permessage-deflate is meant for.
    """
    rng = random.Random(7692)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    words += ["eta", "theta", "iota", "kappa", "lambda", "mu"]
    messages = []
    for index in range(count):
        items = [
            {
                "id": rng.randrange(10**9),
                "symbol": rng.choice(words).upper() + str(rng.randrange(100)),
                "price": round(rng.uniform(1, 5000), 2),
                "quantity": rng.randrange(1, 10_000),
                "side": rng.choice(("buy", "sell")),
                "tags": rng.sample(words, 3),
                "active": rng.random() < 0.8,
            }
            for _ in range(rng.randrange(8, 32))
        ]
        event = {"type": "update", "sequence": index, "channel": "trades", "items": items}
        messages.append(json.dumps(event, separators=(",", ":")))
    return messages


def size_label(size: int) -> str:
    """``16 B``, ``8 KiB``, ``1 MiB``."""
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    if size >= 1 << 10 and size % (1 << 10) == 0:
        return f"{size >> 10} KiB"
    return f"{size} B"
