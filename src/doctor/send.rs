//! The `send` step of `postern doctor --send-test`: one small message through
//! the row's pool, and the provider's reply to it.

use super::*;

/// The `send` step: one test message through `pool`, and the provider's reply.
pub(super) async fn send_step(
    hostname: &str,
    pool: &crate::upstream::pool::Pool,
    test: &SendTest,
) -> Step {
    let from = test
        .from
        .clone()
        .or_else(|| {
            pool.dial()
                .username()
                .filter(|u| u.contains('@'))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| test.to.clone());
    let message = test_message(hostname, &from, &test.to);
    match timeout(
        crate::upstream::client::DATA_END_TIMEOUT,
        send_message(pool, &from, &test.to, &message),
    )
    .await
    {
        Ok(Ok(reply)) => step(
            "send",
            reply.code == 250,
            format!("from {from} to {}: {reply}", test.to),
        ),
        Ok(Err(why)) => step("send", false, format!("from {from} to {}: {why}", test.to)),
        Err(_) => step(
            "send",
            false,
            format!("from {from} to {}: timed out", test.to),
        ),
    }
}

/// MAIL, RCPT and the body on a connection of `pool`; the reply that decides.
async fn send_message(
    pool: &crate::upstream::pool::Pool,
    from: &str,
    to: &str,
    message: &[u8],
) -> Result<crate::smtp::reply::Reply, String> {
    use crate::upstream::client::COMMAND_TIMEOUT;
    let mut c = pool.checkout().await.map_err(|e| e.to_string())?;
    let result = async {
        let e = |e: crate::upstream::UpstreamError| e.to_string();
        for (line, label) in [
            (format!("MAIL FROM:<{from}>"), "MAIL"),
            (format!("RCPT TO:<{to}>"), "RCPT"),
        ] {
            c.queue(&line);
            let sent = Instant::now();
            c.flush().await.map_err(e)?;
            let r = c
                .read_reply(label, sent, COMMAND_TIMEOUT)
                .await
                .map_err(e)?;
            if !r.is_positive() {
                return Ok((r, false));
            }
        }
        if c.caps().chunking {
            c.begin_chunks(Vec::new());
            c.write_body(message).await.map_err(e)?;
            let end = c.end_chunks().await.map_err(e)?;
            let r = end.verdict.ok_or_else(|| "no reply to BDAT".to_owned())?;
            return Ok((r, end.reusable));
        }
        c.queue("DATA");
        let sent = Instant::now();
        c.flush().await.map_err(e)?;
        let r = c
            .read_reply("DATA", sent, COMMAND_TIMEOUT)
            .await
            .map_err(e)?;
        if r.code != 354 {
            return Ok((r, false));
        }
        c.write_body(message).await.map_err(e)?;
        Ok((c.end_body().await.map_err(e)?, true))
    }
    .await;
    match result {
        Ok((reply, reusable)) => {
            if reusable && reply.code == 250 {
                pool.checkin(c);
            } else {
                c.quit().await;
            }
            Ok(reply)
        }
        Err(why) => Err(why),
    }
}

/// A small test message, lines unstuffed, CRLF-terminated.
fn test_message(hostname: &str, from: &str, to: &str) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let id = crate::upstream::outbox::new_id();
    format!(
        "Date: {}\r\nFrom: <{from}>\r\nTo: <{to}>\r\nSubject: postern doctor test\r\n\
         Message-ID: <{id}@{hostname}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n\
         This is a test message from `postern doctor --send-test` on {hostname}.\r\n\
         If it arrived, this upstream relays mail.\r\n",
        rfc5322_date(now)
    )
    .into_bytes()
}

/// `secs` since the epoch as an RFC 5322 date in UTC, e.g. "Wed, 02 Dec 2026 00:15:00 +0000".
fn rfc5322_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let ymd = cert::utc_date(secs);
    let mut parts = ymd.split('-').map(|p| p.parse::<usize>().unwrap_or(1));
    let (y, m, d) = (
        parts.next().unwrap_or(1970),
        parts.next().unwrap_or(1),
        parts.next().unwrap_or(1),
    );
    let weekday = DAYS[usize::try_from(secs.div_euclid(86_400).rem_euclid(7)).unwrap_or(0)];
    let t = secs.rem_euclid(86_400);
    format!(
        "{weekday}, {d:02} {} {y:04} {:02}:{:02}:{:02} +0000",
        MONTHS[(m.clamp(1, 12)) - 1],
        t / 3600,
        (t % 3600) / 60,
        t % 60
    )
}
