#!/usr/bin/env python3
"""Session-per-message SMTP load generator for scripts/bench.sh.

Each of --clients worker processes opens a new SMTP session for every message,
as a device does: connect, EHLO, optionally STARTTLS and EHLO again, optionally
AUTH PLAIN, MAIL, RCPT, DATA, QUIT. Python's smtplib is the client (a real,
widely used one); smtp-source from Postfix cannot do STARTTLS or AUTH.

AUTH is sent as `AUTH PLAIN <initial response>` by hand and any 2xx counts as
success, because smtp-sink (the direct baseline) answers AUTH with 250 where a
real server says 235.

With --pipelining the device pipelines (RFC 2920), as a mail library that
sees PIPELINING does: MAIL, RCPT and DATA go in one write and their three
replies are read after it, then the body. smtplib itself never pipelines, so
those lines are written on its socket and read with its reply parser; a
server that does not offer PIPELINING fails the session.

With --resume each worker is a returning device: it keeps the TLS session
(ticket) its last STARTTLS got and offers it on the next, as a device's TLS
library does; "resumed" counts the sessions the server resumed.

Prints one JSON object: {"ok": N, "failed": N, "resumed": N, "seconds": S, "error": "...",
"latency_ms": {"median": M, "mean": M, "p90": M}}, the latency being one
session's, from before the connect until QUIT is answered, over the sessions
that succeeded.
The clock starts once every worker is connected-ready (processes forked and
waiting on a barrier) and stops when the last one is done.
"""

import argparse
import base64
import json
import multiprocessing as mp
import re
import smtplib
import ssl
import sys
import time


def message(size: int, mail_from: str, rcpt: str) -> bytes:
    head = (
        f"From: {mail_from}\r\nTo: {rcpt}\r\nSubject: postern bench\r\n\r\n"
    ).encode()
    line = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ABCDEFGHIJKL\r\n"
    body = bytearray(head)
    while len(body) < size:
        body += line
    return bytes(body)


def pipelined(s, mail_from: str, rcpt: str, msg: bytes):
    """MAIL, RCPT and DATA in one write, their replies read in order, then the body."""
    if not s.has_extn("pipelining"):
        raise smtplib.SMTPNotSupportedError("the server does not offer PIPELINING")
    s.send(f"MAIL FROM:<{mail_from}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
    replies = [s.getreply() for _ in range(3)]
    for (code, resp), want in zip(replies, (250, 250, 354)):
        if code != want:
            raise smtplib.SMTPResponseException(code, resp)
    body = re.sub(rb"(?m)^\.", b"..", msg)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    s.send(body + b".\r\n")
    code, resp = s.getreply()
    if code != 250:
        raise smtplib.SMTPDataError(code, resp)


class Resuming:
    """An SSLContext stand-in for smtplib.starttls that offers the last session."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.session = None

    def wrap_socket(self, sock, server_hostname=None, **kw):
        return self.ctx.wrap_socket(sock, server_hostname=server_hostname,
                                    session=self.session, **kw)


def worker(args, count, start, results):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # A self-signed loopback certificate made by the bench script.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if args.resume:
        ctx = Resuming(ctx)
    resumed = 0
    msg = message(args.size, args.mail_from, args.rcpt)
    token = None
    if args.user:
        token = base64.b64encode(f"\0{args.user}\0{args.password}".encode()).decode()
    ok = failed = 0
    error = ""
    lats = []
    start.wait()
    for _ in range(count):
        t0 = time.monotonic()
        try:
            with smtplib.SMTP(args.host, args.port, local_hostname="bench.client", timeout=60) as s:
                s.ehlo("bench.client")
                if args.starttls:
                    s.starttls(context=ctx)
                    s.ehlo("bench.client")
                if token:
                    code, resp = s.docmd("AUTH", "PLAIN " + token)
                    if code // 100 != 2:
                        raise smtplib.SMTPAuthenticationError(code, resp)
                if args.pipelining:
                    pipelined(s, args.mail_from, args.rcpt, msg)
                else:
                    s.sendmail(args.mail_from, [args.rcpt], msg)
                if args.resume and args.starttls:
                    # TLS 1.3 tickets arrive after the handshake: read by now.
                    resumed += 1 if s.sock.session_reused else 0
                    ctx.session = s.sock.session
            ok += 1
            lats.append((time.monotonic() - t0) * 1000.0)
        except Exception as e:  # counted and reported; the run goes on
            failed += 1
            error = repr(e)
    results.put((ok, failed, error, lats, resumed))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--messages", type=int, default=100, help="total, split over the clients")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--starttls", action="store_true")
    p.add_argument("--resume", action="store_true", help="offer the last TLS session again (returning devices)")
    p.add_argument("--pipelining", action="store_true",
                   help="MAIL, RCPT and DATA in one write (the server must offer PIPELINING)")
    p.add_argument("--user")
    p.add_argument("--password", default="")
    p.add_argument("--mail-from", default="bench@example.com")
    p.add_argument("--rcpt", default="sink@example.net")
    args = p.parse_args()

    start = mp.Event()
    results = mp.Queue()
    share = [args.messages // args.clients + (1 if i < args.messages % args.clients else 0)
             for i in range(args.clients)]
    procs = [mp.Process(target=worker, args=(args, n, start, results)) for n in share if n]
    for pr in procs:
        pr.start()
    time.sleep(0.2)  # let every worker reach the barrier
    t0 = time.monotonic()
    start.set()
    got = [results.get(timeout=600) for _ in procs]
    seconds = time.monotonic() - t0
    for pr in procs:
        pr.join(timeout=10)
    ok = sum(g[0] for g in got)
    failed = sum(g[1] for g in got)
    error = next((g[2] for g in got if g[2]), "")
    lats = sorted(x for g in got for x in g[3])
    latency = {}
    if lats:
        latency = {
            "median": round(lats[len(lats) // 2], 2),
            "mean": round(sum(lats) / len(lats), 2),
            "p90": round(lats[min(len(lats) - 1, len(lats) * 9 // 10)], 2),
        }
    resumed = sum(g[4] for g in got)
    json.dump({"ok": ok, "failed": failed, "resumed": resumed, "seconds": seconds, "error": error,
               "latency_ms": latency}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
