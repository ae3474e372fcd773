//! The words of the relayed dialogue: the MAIL and RCPT lines sent upstream,
//! built from parsed fields only, and the replies the client gets in the
//! provider's place (postern's own 250s, and the provider's reply marked as
//! the provider's).

use crate::smtp::command::{Body as BodyType, MailFrom, RcptTo, Ret};
use crate::smtp::reply::Reply;
use crate::upstream::Capabilities;

pub(super) fn sender_ok() -> Reply {
    Reply::new(250, "2.1.0", "Sender OK")
}

pub fn recipient_queued() -> Reply {
    Reply::new(250, "2.1.5", "Recipient OK (queued for delivery)")
}

/// An upstream reply as the client sees it: code and enhanced code kept (a
/// class-only code added where the upstream gave none), text marked as the provider's.
pub fn from_upstream(upstream: &str, reply: &Reply) -> Reply {
    let mut r = reply.prefixed(&format!("upstream {upstream}: "));
    if r.enhanced.is_none() {
        r.enhanced = Some(format!("{}.0.0", reply.class()));
    }
    r
}

/// `MAIL FROM:<sender>` with the parameters the upstream understands. Built from
/// parsed fields only; the client's AUTH= parameter is never passed on.
pub fn mail_command(sender: &str, mail: &MailFrom, caps: &Capabilities) -> String {
    let mut line = format!("MAIL FROM:<{sender}>");
    let p = &mail.params;
    if let (Some(size), Some(_)) = (p.size, caps.size) {
        line.push_str(&format!(" SIZE={size}"));
    }
    if caps.eightbitmime {
        match p.body {
            Some(BodyType::EightBitMime) => line.push_str(" BODY=8BITMIME"),
            Some(BodyType::SevenBit) => line.push_str(" BODY=7BIT"),
            None => {}
        }
    }
    if p.smtputf8 && caps.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    if caps.dsn {
        match p.ret {
            Some(Ret::Full) => line.push_str(" RET=FULL"),
            Some(Ret::Hdrs) => line.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &p.envid {
            line.push_str(&format!(" ENVID={envid}"));
        }
    }
    line
}

/// `RCPT TO:<path>` with DSN parameters when the upstream has DSN.
pub fn rcpt_command(rcpt: &RcptTo, caps: &Capabilities) -> String {
    let mut line = format!("RCPT TO:<{}>", rcpt.path);
    if caps.dsn {
        if let Some(n) = &rcpt.params.notify {
            line.push_str(&format!(" NOTIFY={n}"));
        }
        if let Some(o) = &rcpt.params.orcpt {
            line.push_str(&format!(" ORCPT={o}"));
        }
    }
    line
}
