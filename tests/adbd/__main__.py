"""`python -m tests.adbd --port 5555 --profile pixel7`: serve a simulated phone until Ctrl-C."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests.adbd.server import PROFILES, SimulatedAdbd


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.adbd", description=__doc__)
    parser.add_argument("--port", type=int, default=5555, help="TCP port on 127.0.0.1 (0: any free)")
    parser.add_argument("--profile", default="pixel7",
                        help=f"profile name in {PROFILES} or a profile YAML path")
    parser.add_argument("--sandbox", type=Path, help="directory standing in for the phone (default: temp)")
    parser.add_argument("--deny-new-keys", action="store_true", help="reject keys it does not trust yet")
    parser.add_argument("--trust", type=Path, action="append", default=[], help="adbkey.pub to trust")
    args = parser.parse_args()
    sandbox = args.sandbox or Path(tempfile.mkdtemp(prefix="lutnas-adbd-"))
    server = SimulatedAdbd(sandbox, args.profile, port=args.port, trusted_keys=args.trust,
                           accept_new_keys=not args.deny_new_keys).start()
    print(f"simulated {server.profile.props.get('ro.product.model')} listening on {server.address} "
          f"(sandbox {sandbox}); Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
