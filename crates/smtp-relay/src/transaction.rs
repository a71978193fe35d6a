//! One SMTP mail transaction, without the I/O: what may be sent to a server
//! with given extensions, the command lines, and the result for each recipient
//! once the replies are in.
//!
//! - An 8-bit body goes only to a server that offers 8BITMIME (RFC 6152), with
//!   `BODY=8BITMIME`. Otherwise the recipients fail permanently with
//!   `5.6.3 remote server does not accept 8-bit mail`: the body is not
//!   converted to quoted-printable, and never sent raw.
//! - A UTF-8 address goes only to a server that offers SMTPUTF8 (RFC 6531),
//!   with the `SMTPUTF8` parameter; otherwise that recipient (or, for a UTF-8
//!   sender, all) fails permanently with `5.6.7`.
//! - `SIZE=` is declared when the server offers SIZE (RFC 1870); a message over
//!   its announced limit is not sent (`5.3.4`).
//! - Each recipient's result comes from its own RCPT reply, or from the DATA
//!   and end-of-data replies when its RCPT was accepted.

use qs_queue::reply::Class;
use qs_queue::{Outcome, Reply};

use crate::ehlo::Capabilities;
use crate::reply;

/// The parameters of `MAIL FROM`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `BODY=8BITMIME`.
    pub eight_bit: bool,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
    /// `SIZE=n`.
    pub size: Option<usize>,
}

/// What to send for one batch, once the server's extensions are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The `MAIL FROM` parameters.
    pub params: MailParams,
    /// Positions (in the batch) of the recipients to send RCPT for.
    pub send: Vec<usize>,
    /// Positions of recipients refused before sending, with their outcome.
    pub refused: Vec<(usize, Outcome)>,
}

/// Decides what can be sent to a server with `caps`. `Err` is the outcome for
/// every recipient when nothing can be sent at all.
pub fn plan(
    sender: &str,
    recipients: &[&str],
    eight_bit: bool,
    size: usize,
    caps: &Capabilities,
    host: &str,
) -> Result<Plan, Outcome> {
    if eight_bit && !caps.eight_bit_mime {
        return Err(reply::permanent(
            "5.6.3",
            &format!(
                "remote server does not accept 8-bit mail (no 8BITMIME); the message was not sent ({host})"
            ),
        ));
    }
    if let Some(limit) = caps.size_limit()
        && size as u64 > limit
    {
        return Err(reply::permanent(
            "5.3.4",
            &format!("message of {size} bytes exceeds the size limit of {limit} bytes ({host})"),
        ));
    }
    if !sender.is_ascii() && !caps.smtputf8 {
        return Err(reply::permanent(
            "5.6.7",
            &format!(
                "remote server does not accept UTF-8 addresses (no SMTPUTF8): sender <{sender}> ({host})"
            ),
        ));
    }
    let mut send = Vec::new();
    let mut refused = Vec::new();
    for (i, rcpt) in recipients.iter().enumerate() {
        if !rcpt.is_ascii() && !caps.smtputf8 {
            refused.push((
                i,
                reply::permanent(
                    "5.6.7",
                    &format!(
                        "remote server does not accept UTF-8 addresses (no SMTPUTF8) ({host})"
                    ),
                ),
            ));
        } else {
            send.push(i);
        }
    }
    let utf8 = !sender.is_ascii() || send.iter().any(|&i| !recipients[i].is_ascii());
    Ok(Plan {
        params: MailParams {
            eight_bit,
            smtputf8: utf8,
            size: caps.size.map(|_| size),
        },
        send,
        refused,
    })
}

/// `MAIL FROM:<sender> [BODY=8BITMIME] [SMTPUTF8] [SIZE=n]` with its CRLF; an
/// empty sender is the null path `<>`.
pub fn mail_from(sender: &str, params: &MailParams) -> String {
    let mut line = format!("MAIL FROM:<{sender}>");
    if params.eight_bit {
        line.push_str(" BODY=8BITMIME");
    }
    if params.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    if let Some(size) = params.size {
        line.push_str(&format!(" SIZE={size}"));
    }
    line.push_str("\r\n");
    line
}

/// `RCPT TO:<address>` with its CRLF.
pub fn rcpt_to(address: &str) -> String {
    format!("RCPT TO:<{address}>\r\n")
}

/// The replies of one transaction; `None` where a command was not sent or its
/// reply never came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers {
    /// The reply to MAIL.
    pub mail: Option<Reply>,
    /// The reply to each RCPT, in order.
    pub rcpts: Vec<Option<Reply>>,
    /// The reply to DATA.
    pub data: Option<Reply>,
    /// The reply after the final dot.
    pub end: Option<Reply>,
}

impl Answers {
    /// How many RCPT commands were accepted.
    pub fn accepted(&self) -> usize {
        self.rcpts
            .iter()
            .filter(|r| r.as_ref().is_some_and(Reply::is_success))
            .count()
    }

    /// True when the message data should be sent: MAIL, at least one RCPT,
    /// and DATA were accepted.
    pub fn send_data(&self) -> bool {
        self.mail.as_ref().is_some_and(Reply::is_success)
            && self.accepted() > 0
            && self
                .data
                .as_ref()
                .is_some_and(|r| r.class() == Class::Intermediate)
    }
}

/// The outcome for each RCPT sent (same order as `answers.rcpts`). A missing
/// reply is a temporary failure described by `lost` (e.g. `4.4.2 lost
/// connection with HOST while sending DATA`).
pub fn settle(answers: &Answers, host: &str, lost: &Reply) -> Vec<Outcome> {
    let lost = || Outcome::TemporaryFailure {
        reply: lost.clone(),
    };
    let n = answers.rcpts.len();
    match &answers.mail {
        None => return (0..n).map(|_| lost()).collect(),
        Some(mail) if !mail.is_success() => {
            return (0..n).map(|_| reply::outcome(mail, host)).collect();
        }
        Some(_) => {}
    }
    answers
        .rcpts
        .iter()
        .map(|rcpt| match rcpt {
            None => lost(),
            Some(r) if !r.is_success() => reply::outcome(r, host),
            Some(_) => match &answers.data {
                None => lost(),
                Some(data) if data.is_success() => reply::temporary(
                    "4.5.0",
                    &format!("unexpected reply to DATA: {data} ({host})"),
                ),
                Some(data) if data.class() != Class::Intermediate => reply::outcome(data, host),
                Some(_) => match &answers.end {
                    None => lost(),
                    Some(end) => reply::outcome(end, host),
                },
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "mx.far.example[192.0.2.1]:25";

    fn r(code: u16, text: &str) -> Option<Reply> {
        Some(Reply::from_lines(code, &[text]))
    }

    fn caps(eight_bit_mime: bool, smtputf8: bool, size: Option<u64>) -> Capabilities {
        Capabilities {
            eight_bit_mime,
            smtputf8,
            size,
            ..Capabilities::default()
        }
    }

    #[test]
    fn each_recipient_gets_its_own_rcpt_reply() {
        let answers = Answers {
            mail: r(250, "2.1.0 Ok"),
            rcpts: vec![
                r(250, "2.1.5 Ok"),
                r(451, "4.2.0 <b@far.example>: greylisted"),
                r(550, "5.1.1 <c@far.example>: user unknown"),
            ],
            data: r(354, "End data with <CR><LF>.<CR><LF>"),
            end: r(250, "2.0.0 Ok: queued as 4XYZ"),
        };
        assert!(answers.send_data());
        let out = settle(&answers, HOST, &Reply::local("4.4.2", "lost"));
        assert_eq!(
            out,
            vec![
                Outcome::Delivered {
                    reply: format!("250 2.0.0 Ok: queued as 4XYZ ({HOST})").into()
                },
                Outcome::TemporaryFailure {
                    reply: format!("451 4.2.0 <b@far.example>: greylisted ({HOST})").into()
                },
                Outcome::PermanentFailure {
                    reply: format!("550 5.1.1 <c@far.example>: user unknown ({HOST})").into()
                },
            ]
        );
    }

    #[test]
    fn a_refused_mail_from_refuses_everyone() {
        let answers = Answers {
            mail: r(553, "5.7.1 sender rejected"),
            rcpts: vec![r(503, "5.5.1 need MAIL"), r(503, "5.5.1 need MAIL")],
            data: r(503, "5.5.1 need RCPT"),
            end: None,
        };
        assert!(!answers.send_data());
        let out = settle(&answers, HOST, &Reply::local("4.4.2", "lost"));
        assert!(out.iter().all(|o| *o
            == Outcome::PermanentFailure {
                reply: format!("553 5.7.1 sender rejected ({HOST})").into()
            }));
    }

    #[test]
    fn data_and_end_of_data_replies_apply_to_accepted_recipients() {
        let mut answers = Answers {
            mail: r(250, "ok"),
            rcpts: vec![r(250, "ok"), r(550, "no")],
            data: r(452, "4.3.1 insufficient storage"),
            end: None,
        };
        assert!(!answers.send_data());
        let out = settle(&answers, HOST, &Reply::local("4.4.2", "lost"));
        assert!(
            matches!(&out[0], Outcome::TemporaryFailure { reply } if reply.to_string().starts_with("452 "))
        );
        assert!(
            matches!(&out[1], Outcome::PermanentFailure { reply } if reply.to_string().starts_with("550 "))
        );
        answers.data = r(354, "go ahead");
        answers.end = r(554, "5.7.1 spam");
        let out = settle(&answers, HOST, &Reply::local("4.4.2", "lost"));
        assert!(
            matches!(&out[0], Outcome::PermanentFailure { reply } if reply.to_string().starts_with("554 "))
        );
    }

    #[test]
    fn missing_replies_are_temporary_failures() {
        let lost = &Reply::local("4.4.2", "lost connection with mx while sending the message");
        let answers = Answers {
            mail: r(250, "ok"),
            rcpts: vec![r(250, "ok"), r(550, "no"), None],
            data: r(354, "go"),
            end: None,
        };
        let out = settle(&answers, HOST, lost);
        assert_eq!(
            out[0],
            Outcome::TemporaryFailure {
                reply: lost.clone()
            }
        );
        assert!(matches!(out[1], Outcome::PermanentFailure { .. }));
        assert_eq!(
            out[2],
            Outcome::TemporaryFailure {
                reply: lost.clone()
            }
        );
        let nothing = Answers {
            rcpts: vec![None, None],
            ..Answers::default()
        };
        assert_eq!(settle(&nothing, HOST, lost).len(), 2);
        // A 250 to DATA is not "go ahead": temporary, never delivered.
        let odd = Answers {
            mail: r(250, "ok"),
            rcpts: vec![r(250, "ok")],
            data: r(250, "what"),
            end: None,
        };
        assert!(matches!(
            settle(&odd, HOST, lost)[0],
            Outcome::TemporaryFailure { .. }
        ));
    }

    #[test]
    fn eight_bit_mail_needs_8bitmime() {
        let err = plan(
            "a@here",
            &["b@far"],
            true,
            10,
            &caps(false, false, None),
            HOST,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Outcome::PermanentFailure { reply }
                if reply.to_string().starts_with("5.6.3 remote server does not accept 8-bit mail")),
            "{err:?}"
        );
        let ok = plan(
            "a@here",
            &["b@far"],
            true,
            10,
            &caps(true, false, None),
            HOST,
        )
        .unwrap();
        assert!(ok.params.eight_bit);
        assert_eq!(
            mail_from("a@here", &ok.params),
            "MAIL FROM:<a@here> BODY=8BITMIME\r\n"
        );
    }

    #[test]
    fn utf8_addresses_need_smtputf8() {
        let p = plan(
            "a@here",
            &["b@far", "j\u{f6}rg@far"],
            false,
            10,
            &caps(true, false, None),
            HOST,
        )
        .unwrap();
        assert_eq!(p.send, vec![0]);
        assert_eq!(p.refused.len(), 1);
        assert!(
            matches!(&p.refused[0].1, Outcome::PermanentFailure { reply } if reply.to_string().starts_with("5.6.7 "))
        );
        assert!(!p.params.smtputf8);
        let all = plan(
            "j\u{f6}rg@here",
            &["b@far"],
            false,
            10,
            &caps(true, false, None),
            HOST,
        );
        assert!(matches!(all, Err(Outcome::PermanentFailure { .. })));
        let p = plan(
            "a@here",
            &["j\u{f6}rg@far"],
            false,
            10,
            &caps(false, true, Some(0)),
            HOST,
        )
        .unwrap();
        assert!(p.params.smtputf8);
        assert_eq!(
            mail_from("", &p.params),
            "MAIL FROM:<> SMTPUTF8 SIZE=10\r\n"
        );
    }

    #[test]
    fn an_announced_size_limit_is_respected() {
        let err = plan(
            "",
            &["b@far"],
            false,
            2000,
            &caps(false, false, Some(1000)),
            HOST,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Outcome::PermanentFailure { reply } if reply.to_string().starts_with("5.3.4 "))
        );
        assert!(
            plan(
                "",
                &["b@far"],
                false,
                1000,
                &caps(false, false, Some(1000)),
                HOST
            )
            .is_ok()
        );
        assert_eq!(rcpt_to("b@far"), "RCPT TO:<b@far>\r\n");
    }
}
