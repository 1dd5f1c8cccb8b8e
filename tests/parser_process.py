"""A small external parser for the tests: a ROUTER socket speaking Rill's wire format.

    python parser_process.py tcp://127.0.0.1:PORT [rep]      (PORT 0: any free port)

With ``rep`` it uses a plain REP socket (one request at a time, the seed's design) instead.

Prints ``ready <endpoint>`` once bound.  Each request is answered with the receipt time as
its datetime and two fields, ``parsed_by`` and ``length``.  Special lines, to test faults:
``garbage`` gets a reply that is not JSON, ``silent`` gets no reply at all.
"""

import json
import sys

import zmq


def main() -> None:
    endpoint = sys.argv[1].replace(":0", ":*")
    context = zmq.Context()
    rep = sys.argv[2:] == ["rep"]
    sock = context.socket(zmq.REP if rep else zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    print("ready", sock.getsockopt(zmq.LAST_ENDPOINT).decode(), flush=True)
    while True:
        frames = sock.recv_multipart()
        request = json.loads(frames[-1])
        if request["line"] == "silent" and not rep:  # a REP socket must answer every request
            continue
        if request["line"] == "garbage":
            reply = b"this is not JSON"
        else:
            reply = json.dumps(
                {"id": request["id"], "datetime": request["received"],
                 "parsed_by": "external", "length": len(request["line"])}
            ).encode()
        # ROUTER: the peer's identity and the empty delimiter go back in front of the reply.
        sock.send_multipart([reply] if rep else [frames[0], b"", reply])


if __name__ == "__main__":
    main()
