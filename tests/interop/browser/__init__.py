"""Headless Chromium as a peer: the page it runs, and a small DevTools-protocol driver."""
