"""Helpers of tests/test_pubsub*.py: real brokers (brokers.py), a node process (node.py) and
its clients (clients.py); setup.sh installs the brokers."""
