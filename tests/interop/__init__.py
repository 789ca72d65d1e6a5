"""Interoperability: wschannel's client and server against other WebSocket implementations.

Peers: ``websockets`` (asyncio and sync), ``aiohttp``, ``websocket-client``, ``picows``, Node's
``ws`` and headless Chromium. ``tests/interop/setup.sh`` installs the programs that pip's dev
extras do not (Chromium, and ``ws`` through ``npm ci``).
"""
