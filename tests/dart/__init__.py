"""The Dart ``web_socket_channel`` acceptance suite, ported to pytest.

Each test's docstring starts with its Dart ID from ``dart-web-socket-channel.md`` §3 (A*, IO*,
L*, X*), §4.6 (stream_channel) or §4.7 (S*). Where ``api.md`` decides differently from Dart,
the test follows ``api.md`` and names the decision.
"""
