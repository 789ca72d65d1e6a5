"""The peer comparison: wschannel side by side with the other Python WebSocket libraries
that are installed (picows, websockets, aiohttp, websocket-client) and a raw TCP ceiling.

``wschannel bench`` runs it (:mod:`wschannel.bench.run`; ``--quick`` in under two minutes);
``pip install 'wschannel[bench]'`` adds what the plots and the TLS cells need (matplotlib,
trustme). Each measurement runs in worker processes of its own (``python -m
wschannel.bench.worker``, ``python -m wschannel.bench.load``), so the numbers leave out the
runner. docs/performance.md says what is measured and how.
"""
