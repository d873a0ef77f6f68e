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

import threading  # noqa: E402

import moto.s3.responses as s3_responses  # noqa: E402

# moto checks a conditional PUT's If-None-Match / If-Match and then writes,
# with no lock, on a threaded server: two PUTs of one key with
# `If-None-Match: *` can both succeed, where S3 and R2 let exactly one. A
# Delta commit is such a PUT (put-if-absent of the next version), so two
# writers racing for one version could both be told they won, one commit
# overwriting the other. Conditional PUTs are made one at a time here.
_put_object = s3_responses.S3Response.put_object
_conditional = threading.Lock()


def _put_object_atomically(self):
    if self.headers.get("If-None-Match") or self.headers.get("If-Match"):
        with _conditional:
            return _put_object(self)
    return _put_object(self)


s3_responses.S3Response.put_object = _put_object_atomically

from moto.server import main  # noqa: E402  (after the patch, as it must be)

if __name__ == "__main__":
    sys.exit(main())
