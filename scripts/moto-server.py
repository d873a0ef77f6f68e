"""moto's S3 server (`moto_server`), as scripts/s3-server.sh starts it.

The same server and S3 implementation, with one cost taken out: moto 5
works out which of its services a request is for by listing its own
package folder (some 150 `isdir` calls) on every request, about a fifth of
the server's CPU in CROW's S3 tests. The folder does not change while the
server runs, so the list is read once.

    python scripts/moto-server.py -H 127.0.0.1 -p PORT
"""
import sys

import moto.backends as backends

_modules = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: _modules

from moto.server import main  # noqa: E402  (after the patch, as it must be)

if __name__ == "__main__":
    sys.exit(main())
