"""The Dart ``web_socket_channel`` acceptance suite, ported to pytest: what Dart's package
does, test by test.

Each test's docstring starts with an ID for the Dart test it ports and names Dart's test file
(``test_adapter.py``: A*, ``adapter_web_socket_channel_test.dart``; ``test_io.py``: IO*,
``io_test.dart``; ``test_legacy.py``: L*, 2.x's ``web_socket_test.dart``; ``test_shelf.py``:
S*, ``shelf_web_socket``'s tests; ``test_stream_channel.py``: ``stream_channel``'s
guarantees; ``test_derived.py``: X*, behaviours that follow from Dart's semantics without a
test of their own; ``test_sync.py``: those that apply to ``wschannel.sync``). The § numbers
are those of the outline of Dart's package the port was written from. Where ``wschannel``
decides differently from Dart, the test follows the decision and names it ("design.md
decision 4": the numbered list in docs/design.md, "The API's decisions").
"""
