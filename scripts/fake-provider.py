#!/usr/bin/env python3
"""A scripted SMTP provider on loopback, for scripts/prometheus-check.sh.

usage: fake-provider.py PORT PASSWORD_FILE

Offers PIPELINING and AUTH PLAIN; AUTH succeeds when the password equals the
content of PASSWORD_FILE (read at each AUTH, so changing the file is "the
provider password changed"). MAIL from tempfail* gets 451, from reject* 553;
RCPT to reject* gets 550; a message with an "X-Verdict: tempfail" (or
"reject") header line gets 451 (554) after its dot, any other 250.
"""

import asyncio
import base64
import sys

PORT = int(sys.argv[1])
PASSWORD_FILE = sys.argv[2]


def expected_password():
    with open(PASSWORD_FILE, encoding="utf-8") as f:
        return f.read().strip()


async def session(reader, writer):
    def send(text):
        writer.write(text.encode() + b"\r\n")

    send("220 fake.provider ESMTP")
    await writer.drain()
    while True:
        raw = await reader.readline()
        if not raw:
            break
        line = raw.decode(errors="replace").rstrip("\r\n")
        verb = line.upper()
        if verb.startswith("EHLO"):
            writer.write(
                b"250-fake.provider\r\n250-PIPELINING\r\n250-SIZE 10000000\r\n"
                b"250-ENHANCEDSTATUSCODES\r\n250 AUTH PLAIN\r\n"
            )
        elif verb.startswith("AUTH PLAIN "):
            try:
                fields = base64.b64decode(line.split()[2]).split(b"\0")
                ok = fields[-1].decode() == expected_password()
            except (ValueError, IndexError):
                ok = False
            send("235 2.7.0 ok" if ok else "535 5.7.8 authentication failed")
        elif verb.startswith("MAIL FROM:"):
            sender = line[10:].split(">")[0].lstrip("<")
            if sender.startswith("tempfail"):
                send("451 4.3.2 try again later")
            elif sender.startswith("reject"):
                send("553 5.7.1 sender refused")
            else:
                send("250 2.1.0 ok")
        elif verb.startswith("RCPT TO:"):
            rcpt = line[8:].split(">")[0].lstrip("<")
            send("550 5.1.1 no such user" if rcpt.startswith("reject") else "250 2.1.5 ok")
        elif verb == "DATA":
            send("354 go ahead")
            await writer.drain()
            body = []
            while True:
                part = await reader.readline()
                if not part or part == b".\r\n":
                    break
                body.append(part)
            text = b"".join(body)
            if b"X-Verdict: tempfail" in text:
                send("451 4.3.0 queue full")
            elif b"X-Verdict: reject" in text:
                send("554 5.6.0 content refused")
            else:
                send("250 2.0.0 queued")
        elif verb == "QUIT":
            send("221 2.0.0 bye")
            await writer.drain()
            break
        else:
            send("250 2.0.0 ok")
        await writer.drain()
    writer.close()


async def main():
    server = await asyncio.start_server(session, "127.0.0.1", PORT)
    async with server:
        await server.serve_forever()


asyncio.run(main())
