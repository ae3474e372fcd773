"""The load side of the soak (see soak.py): a recording fake provider that
injects faults, a small SMTP client, and the client scenarios the workers mix."""

import asyncio
import base64
import random
import time
import uuid

HOST = "127.0.0.1"
PASSWORD = "soak-password"
MAX_SIZE = 256 * 1024
OP_TIMEOUT = 30.0


class Stats:
    def __init__(self):
        self.count = {}
        self.acked = set()  # X-Soak-Id of messages postern answered 250 at end-of-data
        self.delivered = {}  # X-Soak-Id -> times the provider recorded it
        self.probes = []  # seconds each probe took
        self.probe_failures = []
        self.samples = []  # (t, rss_kib, fds, threads, active)

    def inc(self, key, n=1):
        self.count[key] = self.count.get(key, 0) + n


# --------------------------------------------------------------------------------------
# The fake provider


class Provider:
    """A recording SMTP server with injected faults at end-of-data."""

    def __init__(self, stats, seed):
        self.stats = stats
        self.rng = random.Random(seed)
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self.serve, HOST, 0)
        return self.server.sockets[0].getsockname()[1]

    async def serve(self, reader, writer):
        self.stats.inc("provider_connections")
        try:
            await self.dialogue(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # the soak is over and the loop is closing
        finally:
            writer.close()

    async def line(self, reader):
        data = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=120)
        return data[:-2]

    async def dialogue(self, reader, writer):
        writer.write(b"220 provider.soak ESMTP\r\n")
        await writer.drain()
        while True:
            line = await self.line(reader)
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(
                    b"250-provider.soak\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                    b"250-ENHANCEDSTATUSCODES\r\n250-SIZE 10485760\r\n250 AUTH PLAIN LOGIN\r\n"
                )
            elif verb == b"AUTH":
                writer.write(b"235 2.7.0 ok\r\n")
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                writer.write(b"250 2.0.0 ok\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go\r\n")
                await writer.drain()
                body = []
                while True:
                    l = await self.line(reader)
                    if l == b".":
                        break
                    body.append(l)
                fate = self.rng.random()
                if fate < 0.02:
                    self.stats.inc("provider_dropped")
                    return  # close without a reply
                if fate < 0.07:
                    self.stats.inc("provider_451")
                    writer.write(b"451 4.3.0 try again later\r\n")
                elif fate < 0.10:
                    self.stats.inc("provider_554")
                    writer.write(b"554 5.7.1 refused\r\n")
                else:
                    soak_id = next(
                        (l[10:].strip().decode() for l in body if l.startswith(b"X-Soak-Id:")),
                        None,
                    )
                    if soak_id:
                        self.stats.delivered[soak_id] = self.stats.delivered.get(soak_id, 0) + 1
                    self.stats.inc("provider_250")
                    writer.write(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"500 5.5.1 what\r\n")
            await writer.drain()


# --------------------------------------------------------------------------------------
# An SMTP client for the load


class Client:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port):
        r, w = await asyncio.wait_for(asyncio.open_connection(HOST, port), OP_TIMEOUT)
        c = cls(r, w)
        await c.expect("220")
        return c

    async def reply(self):
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), OP_TIMEOUT)
            lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            if len(line) < 4 or line[3:4] != b"-":
                return "\n".join(lines)

    async def expect(self, code):
        r = await self.reply()
        if not r.startswith(code):
            raise Unexpected(code, r)
        return r

    async def send(self, data):
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), OP_TIMEOUT)

    async def cmd(self, line, code):
        await self.send(line.encode() + b"\r\n")
        return await self.expect(code)

    async def login(self, user, password):
        await self.cmd("EHLO load.soak", "250")
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        await self.send(f"AUTH PLAIN {token}\r\n".encode())
        return await self.reply()

    def abort(self):
        self.writer.transport.abort()

    async def close(self):
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (ConnectionError, asyncio.TimeoutError):
            pass


class Unexpected(Exception):
    def __init__(self, want, got):
        super().__init__(f"expected {want}, got {got!r}")
        self.got = got


def message(soak_id, body_lines=5, filler=b""):
    head = (
        f"From: soak@example.com\r\nTo: sink@example.net\r\nSubject: soak\r\n"
        f"X-Soak-Id: {soak_id}\r\n\r\n"
    ).encode()
    body = b"".join(b"line %d of the soak\r\n.dot line\r\n" % i for i in range(body_lines))
    return head + body + filler


async def logged_in(port):
    """A client past the greeting, EHLO and a good AUTH PLAIN."""
    c = await Client.connect(port)
    r = await c.login("soak", PASSWORD)
    if not r.startswith("235"):
        raise Unexpected("235", r)
    return c


async def open_data(c):
    """MAIL, RCPT and DATA pipelined, as the README's clients do; up to the 354."""
    await c.send(b"MAIL FROM:<soak@example.com>\r\nRCPT TO:<sink@example.net>\r\nDATA\r\n")
    for code in ("250", "250", "354"):
        await c.expect(code)


def count_final(stats, soak_id, r):
    """Counts the end-of-data reply `r` to message `soak_id`."""
    stats.inc("sent")
    if r.startswith("250"):
        stats.acked.add(soak_id)
        stats.inc("acked")
    elif r.startswith("4"):
        stats.inc("tempfail")
    elif r.startswith("5"):
        stats.inc("refused")
    else:
        raise Unexpected("a final reply", r)


async def say_quit(c):
    await c.cmd("QUIT", "221")
    await c.close()


async def relay(port, stats, rng):
    c = await logged_in(port)
    for _ in range(rng.randint(1, 3)):
        soak_id = str(uuid.uuid4())
        await open_data(c)
        body = message(soak_id, rng.randint(1, 200)).replace(b"\r\n.", b"\r\n..")
        await c.send(body + b".\r\n")
        count_final(stats, soak_id, await c.reply())
    await say_quit(c)


async def auth_failure(port, stats, rng):
    c = await Client.connect(port)
    r = await c.login("soak", "not-the-password")
    if not r.startswith("535"):
        raise Unexpected("535", r)
    stats.inc("auth_failed")
    await say_quit(c)


async def oversize(port, stats, rng):
    c = await logged_in(port)
    await open_data(c)
    filler = (b"x" * 98 + b"\r\n") * (MAX_SIZE // 100 + 64)
    await c.send(message(str(uuid.uuid4()), 1, filler) + b".\r\n")
    await c.expect("552")
    stats.inc("oversize_refused")
    await say_quit(c)


async def slow(port, stats, rng):
    c = await logged_in(port)
    soak_id = str(uuid.uuid4())
    # One command at a time, then the message a few bytes at a time with pauses:
    # a slow device on a bad link.
    await c.cmd("MAIL FROM:<soak@example.com>", "250")
    await c.cmd("RCPT TO:<sink@example.net>", "250")
    await c.cmd("DATA", "354")
    data = message(soak_id, 10).replace(b"\r\n.", b"\r\n..") + b".\r\n"
    for i in range(0, len(data), 37):
        await c.send(data[i : i + 37])
        await asyncio.sleep(0.02)
    stats.inc("slow")
    count_final(stats, soak_id, await c.reply())
    await say_quit(c)


async def abrupt(port, stats, rng):
    c = await logged_in(port)
    await open_data(c)
    data = message(str(uuid.uuid4()), rng.randint(1, 100))
    await c.send(data[: rng.randint(1, len(data) - 1)])
    c.abort()  # RST mid-DATA: postern must drop the transaction, never deliver it
    stats.inc("aborted_mid_data")


SCENARIOS = [(relay, 60), (auth_failure, 8), (oversize, 7), (slow, 10), (abrupt, 15)]


async def worker(n, port, stats, deadline, seed):
    rng = random.Random(seed * 1000 + n)
    funcs = [f for f, _ in SCENARIOS]
    weights = [w for _, w in SCENARIOS]
    for _ in range(1_000_000):  # bounded, besides the deadline
        if time.monotonic() >= deadline:
            return
        f = rng.choices(funcs, weights)[0]
        try:
            await f(port, stats, rng)
        except Unexpected as e:
            stats.inc(f"unexpected_{f.__name__}")
            if stats.count.get(f"unexpected_{f.__name__}", 0) <= 3:
                print(f"soak: {f.__name__}: {e}", flush=True)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
            stats.inc(f"error_{f.__name__}")
            if stats.count.get(f"error_{f.__name__}", 0) <= 3:
                print(f"soak: {f.__name__}: {type(e).__name__} {e}", flush=True)
