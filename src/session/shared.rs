//! The limits a session checks that `[cluster]` shares across replicas:
//! each asks Redis first and, when Redis does not answer, either refuses
//! (`451 4.3.0`) or decides with this replica's own limiter, whose limits were
//! divided by `replicas` when the policy was built (`on_redis_error`).
//! Without `[cluster]` each is the local limiter alone, as before.

use std::sync::Arc;
use std::time::Duration;

use super::Session;
use crate::auth::User;
use crate::cluster::{Answer, Ask, Cluster, LeaseVerdict, Verdict};
use crate::limits::{CountGuard, ip_key};
use crate::refusal::Refusal;

/// What counts a session against its user's `max_connections_per_user`.
pub(super) enum UserSlot {
    Local(#[allow(dead_code)] CountGuard<Arc<str>>),
    Shared(crate::cluster::Lease),
}

/// What MAIL's shared decisions came to (`claim_slot_and_message`).
#[derive(Default)]
pub(super) struct MailDecision {
    /// `None`: not asked (the MAIL failed its own checks); `Some(Err)`: the
    /// message is refused (over the rate, or Redis did not answer and the
    /// configuration says refuse).
    pub message: Option<Result<(), Refusal>>,
    /// With `[cluster]`: the first RCPT's unit of `recipients_per_hour`,
    /// taken ahead (given back if the transaction ends without a RCPT).
    pub rcpt_ahead: Option<crate::cluster::Taken>,
}

/// How a shared rate was decided: by Redis, or left to the local limiter.
enum Shared {
    Decided(Result<(), Duration>),
    Local,
}

impl Session {
    // `&mut self`: a session's stream is not `Sync`, so its futures must not
    // hold a shared borrow of it across an await.
    async fn shared_rate(
        &mut self,
        kind: &str,
        user: &User,
        period: Duration,
        limit: u32,
        decision: &'static str,
    ) -> Result<Shared, Refusal> {
        let Some(c) = self.shared.cluster.clone() else {
            return Ok(Shared::Local);
        };
        let verdict = c.rate(&["rate", kind, &user.name], period, limit).await;
        Self::shared_answer(&c, Answer::Rate(verdict), decision)
    }

    /// A rate as Redis decided it, or left to the local limiter (counted in
    /// `decision`'s fallback) when Redis did not answer.
    fn shared_answer(
        c: &Cluster,
        answer: Answer,
        decision: &'static str,
    ) -> Result<Shared, Refusal> {
        match answer {
            Answer::Rate(Verdict::Allowed) => Ok(Shared::Decided(Ok(()))),
            Answer::Rate(Verdict::Wait(w)) => Ok(Shared::Decided(Err(w))),
            _ if c.refuses() => Err(Refusal::SharedLimitsUnavailable),
            _ => {
                c.fell_back(decision);
                Ok(Shared::Local)
            }
        }
    }

    /// Takes one recipient from `user`'s `recipients_per_hour`: the unit
    /// MAIL took ahead, if it could, else one decided now.
    pub(super) async fn take_recipient(&mut self, user: &User) -> Result<(), Refusal> {
        if let Some(taken) = self.txn.as_mut().and_then(|t| t.rcpt_ahead.take()) {
            taken.use_up();
            return Ok(());
        }
        let period = Duration::from_secs(3600);
        let limit = user.limits.recipients_per_hour;
        let taken = match self
            .shared_rate("rcpt", user, period, limit, "recipient_rate")
            .await?
        {
            Shared::Decided(r) => r,
            Shared::Local => user.rates.take_recipient(),
        };
        taken.map_err(|wait| Refusal::RecipientRate {
            user: user.name.clone(),
            wait,
        })
    }

    /// Whether AUTH from this client's address is locked out: by failures any
    /// replica saw, or by this replica's own throttle (which holds what was
    /// counted during a fallback episode). Without Redis the throttle alone
    /// decides, under either `on_redis_error`: it protects postern, not a
    /// provider's quota.
    pub(super) async fn auth_locked(&mut self) -> bool {
        let ip = self.peer.ip();
        if self.policy.auth_throttle.locked(ip) {
            return true;
        }
        let Some(c) = self.shared.cluster.clone() else {
            return false;
        };
        match c.auth_locked(ip_key(ip)).await {
            Some(locked) => locked,
            None => {
                c.fell_back("auth_failures");
                false
            }
        }
    }

    /// Counts a failed AUTH from this client's address (without making the
    /// client wait for Redis).
    pub(super) fn note_auth_failure(&self) {
        let ip = self.peer.ip();
        let Some(c) = self.shared.cluster.clone() else {
            self.policy.auth_throttle.failed(ip);
            return;
        };
        let throttle = self.policy.auth_throttle.clone();
        let per_minute = self.policy.config.limits.auth_failures_per_ip_per_minute;
        tokio::spawn(async move {
            if !c.auth_failed(ip_key(ip), per_minute).await {
                c.fell_back("auth_failures");
                throttle.failed(ip);
            }
        });
    }

    /// Counts this connection against `user`'s connection cap (once per
    /// session). `Err` when the user already has as many connections as
    /// allowed (or the shared count cannot be had and the configuration says
    /// refuse): the reply is queued and the session must close.
    pub(super) async fn claim_user_slot(&mut self, user: &User) -> Result<(), Refusal> {
        self.claim_slot_and_message(user, false).await.map(|_| ())
    }

    /// MAIL's shared decisions, in one round trip with `[cluster]`: this
    /// connection against `user`'s connection cap (as `claim_user_slot`)
    /// and, when `message` (the MAIL passed its own checks), one message of
    /// `messages_per_minute`, taken only once the slot is had, and one unit
    /// of `recipients_per_hour` taken ahead for the first RCPT (only when
    /// the message is allowed). `Err` as `claim_user_slot`.
    pub(super) async fn claim_slot_and_message(
        &mut self,
        user: &User,
        message: bool,
    ) -> Result<MailDecision, Refusal> {
        let need_slot = self.needs_user_slot(user)?;
        let period = Duration::from_secs(60);
        let limit = user.limits.messages_per_minute;
        let mut rcpt_ahead = None;
        let (slot, rate) = match self.shared.cluster.clone() {
            None => (None, None),
            Some(c) => {
                let (lease_key, rate_key, rcpt_key) = (
                    ["lease", "user", &*user.name],
                    ["rate", "msg", &*user.name],
                    ["rate", "rcpt", &*user.name],
                );
                let lease = Ask::Lease {
                    parts: &lease_key,
                    max: user.limits.max_connections_per_user,
                };
                let rate = Ask::Rate {
                    parts: &rate_key,
                    period,
                    burst: limit,
                    cost: 1,
                };
                let ahead = Ask::Ahead {
                    parts: &rcpt_key,
                    period: Duration::from_secs(3600),
                    burst: user.limits.recipients_per_hour,
                };
                match (need_slot, message) {
                    (true, true) => {
                        let [l, r, a] = c.decide([lease, rate, ahead]).await;
                        rcpt_ahead = Some(a);
                        (Some((c.clone(), l)), Some((c, r)))
                    }
                    (true, false) => {
                        let [l] = c.decide([lease]).await;
                        (Some((c, l)), None)
                    }
                    (false, true) => {
                        let [r, a] = c.decide([rate, ahead]).await;
                        rcpt_ahead = Some(a);
                        (None, Some((c, r)))
                    }
                    (false, false) => (None, None),
                }
            }
        };
        if need_slot {
            self.take_user_slot(user, slot)?;
        }
        if !message {
            return Ok(MailDecision::default());
        }
        let taken = match rate {
            None => user.rates.take_message(),
            Some((c, answer)) => match Self::shared_answer(&c, answer, "message_rate") {
                Ok(Shared::Decided(r)) => r,
                Ok(Shared::Local) => user.rates.take_message(),
                // Refused, not fallen back: the MAIL gets 451 4.3.0.
                Err(r) => {
                    return Ok(MailDecision {
                        message: Some(Err(r)),
                        rcpt_ahead: None,
                    });
                }
            },
        };
        let message = taken.map_err(|wait| Refusal::MessageRate {
            user: user.name.clone(),
            wait,
        });
        let rcpt_ahead = match rcpt_ahead {
            Some(Answer::Ahead(t)) if message.is_ok() => Some(t),
            _ => None,
        };
        Ok(MailDecision {
            message: Some(message),
            rcpt_ahead,
        })
    }

    /// Whether this session still has to claim `user`'s slot. `Err` when it
    /// held a shared one that was lost: another replica may hold this slot
    /// now, so rather than exceed the user's cap this session ends (its last
    /// transaction is over).
    fn needs_user_slot(&mut self, user: &User) -> Result<bool, Refusal> {
        if let Some((name, slot)) = &self.user_slot
            && *name == user.name
        {
            if matches!(slot, UserSlot::Shared(l) if l.is_lost()) {
                tracing::info!(user = %user.name, "shared connection lease lost; closing the session");
                let r = Refusal::SharedSlotLost;
                self.decline(r.clone());
                return Err(r);
            }
            return Ok(false);
        }
        self.user_slot = None;
        Ok(true)
    }

    /// Takes `user`'s slot given what Redis said (`shared`, with
    /// `[cluster]`), or from the local count.
    fn take_user_slot(
        &mut self,
        user: &User,
        shared: Option<(Arc<Cluster>, Answer)>,
    ) -> Result<(), Refusal> {
        let mut max = user.limits.max_connections_per_user;
        if let Some((c, answer)) = shared {
            match answer {
                Answer::Lease(LeaseVerdict::Granted(l)) => {
                    self.user_slot = Some((user.name.clone(), UserSlot::Shared(l)));
                    return Ok(());
                }
                Answer::Lease(LeaseVerdict::Full) => {
                    return Err(self.too_many_connections(user, max));
                }
                _ if c.refuses() => {
                    let r = Refusal::SharedLimitsUnavailable;
                    self.decline(r.clone());
                    return Err(r);
                }
                _ => {
                    c.fell_back("user_connections");
                    max = c.share_of(max);
                }
            }
        }
        match self
            .shared
            .limiters
            .connections_per_user
            .try_acquire(user.name.clone(), max)
        {
            Some(slot) => {
                self.user_slot = Some((user.name.clone(), UserSlot::Local(slot)));
                Ok(())
            }
            None => Err(self.too_many_connections(user, max)),
        }
    }

    fn too_many_connections(&mut self, user: &User, max: u32) -> Refusal {
        tracing::info!(user = %user.name, max, "connection limit per user reached");
        let r = Refusal::UserConnections(user.name.clone());
        self.decline(r.clone());
        r
    }
}
