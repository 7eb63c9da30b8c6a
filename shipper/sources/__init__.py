"""Where log lines come from, without Ray: stdin, followed files, HTTP requests.

- :mod:`shipper.sources.lines`        cutting a byte stream into whole lines
- :mod:`shipper.sources.stdin`        a stream read as it arrives, stoppable at once
- :mod:`shipper.sources.files`        files followed like ``tail -F``, known by identity
- :mod:`shipper.sources.checkpoints`  read positions: acknowledged prefixes, kept in LMDB
- :mod:`shipper.sources.http`         the HTTP intake's requests and answers

The actors in :mod:`actors.sources` run these on the node that has the input and
hand whole-line blobs straight to that node's Router.
"""
