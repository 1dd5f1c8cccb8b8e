"""Soak: the chaos run of tests/integration/test_chaos.py for minutes on end.

Numbered lines into files on the private test sshd (root needed), with random
rotations (create, several deep, gzip, copytruncate), link resets and silent
blackholes through a TCP proxy, and SIGKILLs of twistd; then it prints lines
written, mirrored, lost, duplicated, reconnects, restarts and rotations.

    .venv/bin/python bench/soak.py --minutes 10 [--busybox] [--seed N]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--busybox", action="store_true", help="use the BusyBox-only login")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()

    from twisted.internet import defer, task

    from tests.integration.chaos import ChaosRun
    from tests.integration.sshd import SSHServer

    @defer.inlineCallbacks
    def soak(reactor):
        server = SSHServer()
        yield server.start()
        seed = args.seed if args.seed is not None else random.randrange(2**32)
        print(f"soak: {args.minutes:g} min, {'BusyBox' if args.busybox else 'GNU'} login, seed {seed}", flush=True)
        run = ChaosRun(server, server.busybox if args.busybox else server.gnu, args.minutes * 60, seed=seed,
                       converge_seconds=max(90.0, args.minutes * 60))
        try:
            report = yield run.run()
        finally:
            log_text = run.rill.log_text()
            yield run.cleanup()
            yield server.cleanup()
        print(report.line())
        if report.lost or report.duplicated or report.gaps or report.mismatched_generations or report.out_of_order:
            with tempfile.NamedTemporaryFile("w", prefix="rill-soak-", suffix=".log", delete=False) as f:
                f.write(log_text)
            print("  twistd log:", f.name)
        for problem in report.mismatched_generations:
            print("  mismatch:", problem)
        for difference in report.order_differences:
            print("  order:", difference)
        if report.lost or report.duplicated or report.gaps or report.mismatched_generations:
            raise SystemExit(1)

    task.react(soak)


if __name__ == "__main__":
    main()
