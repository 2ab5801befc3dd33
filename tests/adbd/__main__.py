"""`python -m tests.adbd --port 5555 --profile pixel7`: serve a simulated phone until Ctrl-C or `kill`.

A sandbox it created itself (`/tmp/lutnas-adbd-*`) is removed when it stops, on SIGINT, SIGTERM or
SIGHUP alike; one given with --sandbox is left as it is."""

from __future__ import annotations

import argparse
import shutil
import signal
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
    # `kill` (SIGTERM) or a closed terminal (SIGHUP) ends it the way Ctrl-C does, cleaning up.
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, _interrupt)
    try:
        server = SimulatedAdbd(sandbox, args.profile, port=args.port, trusted_keys=args.trust,
                               accept_new_keys=not args.deny_new_keys).start()
        try:
            print(f"simulated {server.profile.props.get('ro.product.model')} listening on "
                  f"{server.address} (sandbox {sandbox}); Ctrl-C or kill stops it", flush=True)
            while True:
                time.sleep(3600)
        finally:
            server.stop()
    except KeyboardInterrupt:
        pass
    finally:
        if args.sandbox is None:
            shutil.rmtree(sandbox, ignore_errors=True)


def _interrupt(number: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(number).name)


if __name__ == "__main__":
    main()
