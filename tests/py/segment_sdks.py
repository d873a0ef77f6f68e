"""Send events to a CROW collector with the official Segment and RudderStack
Python SDKs, configured only with CROW's host and a write key.

usage: segment_sdks.py HOST WRITE_KEY
Prints the message ids the SDKs sent (one per line). Exits non-zero if an
SDK reports an error.
"""
import sys

errors = []


def on_error(error, items):
    errors.append(repr(error))


def main():
    host, key = sys.argv[1], sys.argv[2]

    import segment.analytics as segment

    segment.write_key = key
    segment.host = host
    segment.on_error = on_error
    segment.sync_mode = True
    segment.track("seg-user", "Product Viewed", {"product_id": "nw-1001", "price": 249.0}, message_id="seg-1")
    segment.page("seg-user", "Shop", "Home", {"url": "https://shop.example/"}, message_id="seg-2")
    segment.identify("seg-user", {"plan": "pro"}, message_id="seg-3")
    segment.flush()

    import rudderstack.analytics as rudder

    rudder.write_key = key
    rudder.dataPlaneUrl = host
    rudder.host = host
    rudder.on_error = on_error
    rudder.sync_mode = True
    rudder.gzip = True
    rudder.track("rudder-user", "Order Completed", {"order_id": "o-1", "revenue": 42.0}, message_id="rs-1")
    rudder.screen(user_id="rudder-user", name="Cart", properties={}, message_id="rs-2")
    rudder.flush()

    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)
    print("seg-1\nseg-2\nseg-3\nrs-1\nrs-2")


if __name__ == "__main__":
    main()
