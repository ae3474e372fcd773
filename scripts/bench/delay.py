#!/usr/bin/env python3
"""A delay line for scripts/bench.sh: a loopback TCP proxy that holds every
chunk it relays for --delay-ms before passing it on, in each direction, so a
local sink looks like a provider that far away (an SMTP command and its reply
cost 2 x delay). Order is kept, and chunks in flight overlap, so the delay adds
latency without capping throughput. TCP's own handshake is local and not
delayed (a real distant provider would cost one more round trip per new
connection, which flatters the direct path).

It also counts round trips as the wire shows them, whatever the machine's load
does to the clock: a "turn" is data from the client side that follows data
from the server side on the same connection (or is the first the client
sends), so commands written together, or a body that arrives in many reads,
are one turn, and every command a client sends only after a reply is one more.
The banner alone (a server that speaks first) is not a turn.

    delay.py --listen PORT --to PORT --delay-ms 25

Prints "ready" on stdout once it listens, then "turns=N" (the running total
over every connection) each time a turn starts; runs until it is killed.
"""

import argparse
import asyncio
import sys


TURNS = 0


def count_turn():
    global TURNS
    TURNS += 1
    print(f"turns={TURNS}", flush=True)


async def pump(reader, writer, delay, side, last):
    """Copies reader to writer, each chunk `delay` seconds late; EOF is passed on the same way.
    `side` is "client" or "server", the end `reader` reads from; `last` (shared by
    a connection's two pumps) holds the side that sent the latest data."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def feed():
        while True:
            try:
                data = await reader.read(65536)
            except (ConnectionError, OSError):
                data = b""
            if data:
                if side == "client" and last[0] != "client":
                    count_turn()
                last[0] = side
            await queue.put((loop.time() + delay, data))
            if not data:
                return

    async def deliver():
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                return

    await asyncio.gather(feed(), deliver())


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--to", type=int, required=True)
    p.add_argument("--delay-ms", type=float, required=True, help="added to each direction")
    args = p.parse_args()
    delay = args.delay_ms / 1000.0

    async def serve(c_reader, c_writer):
        try:
            u_reader, u_writer = await asyncio.open_connection("127.0.0.1", args.to)
        except OSError:
            c_writer.close()
            return
        try:
            last = [None]
            await asyncio.gather(pump(c_reader, u_writer, delay, "client", last),
                                 pump(u_reader, c_writer, delay, "server", last))
        finally:
            for w in (c_writer, u_writer):
                w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", args.listen, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
