//! Commands sent to `NAME-request@`: in the subject, or in the first lines of
//! the body (up to [`MAX_LINES`] non-empty lines, stopping at `end`, at a
//! signature `--` and skipping quoted `>` lines), one command a line:
//!
//! | command | who | does |
//! |---|---|---|
//! | `subscribe [ADDRESS]` | anyone (ADDRESS: owners) | joins, after a confirming reply unless an owner asks |
//! | `unsubscribe [ADDRESS]` | members (ADDRESS: owners) | leaves, likewise confirmed |
//! | `help` | anyone | the list's commands |
//! | `who`, `members` | owners | the member list |
//! | `confirm TOKEN` | whoever got the token | completes a subscription or unsubscription |
//! | `approve TOKEN`, `reject TOKEN` | moderators (the token is theirs) | decides on a held post |
//!
//! Replies (`Re:`, `Fwd:` …) are skipped in the subject, so answering a
//! confirmation request works with any mail program.

/// Non-empty body lines read at most.
pub const MAX_LINES: usize = 10;

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Join (the sender, or the address given).
    Subscribe(Option<String>),
    /// Leave (the sender, or the address given).
    Unsubscribe(Option<String>),
    /// The list of commands.
    Help,
    /// The member list (owners only).
    Who,
    /// Complete a subscription or unsubscription.
    Confirm(String),
    /// Approve a held post.
    Approve(String),
    /// Reject a held post.
    Reject(String),
}

/// What a request message asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// The commands understood, in order, without repeats.
    pub commands: Vec<Command>,
    /// Lines that looked like commands but are wrong (a missing token, an
    /// extra word), each with the reason.
    pub errors: Vec<String>,
}

/// Reads the commands of a request message.
pub fn parse(subject: Option<&str>, body: &str) -> Request {
    let mut request = Request::default();
    if let Some(subject) = subject {
        let subject = strip_reply_prefixes(subject);
        parse_line(subject, &mut request);
    }
    let mut seen = 0;
    for line in body.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('>') {
            continue;
        }
        if line == "--" || line.eq_ignore_ascii_case("end") || seen >= MAX_LINES {
            break;
        }
        seen += 1;
        parse_line(line, &mut request);
    }
    request
}

fn parse_line(line: &str, request: &mut Request) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some(first) = words.first() else { return };
    let verb = first.to_lowercase();
    let args = &words[1..];
    let with_token = |make: fn(String) -> Command, request: &mut Request| match args {
        [token] => push(request, make((*token).to_string())),
        [] => request.errors.push(format!("{verb}: the token is missing")),
        _ => request.errors.push(format!(
            "{verb}: expected one token, got {} words",
            args.len()
        )),
    };
    let optional_address = |make: fn(Option<String>) -> Command, request: &mut Request| match args {
        [] => push(request, make(None)),
        [address] => push(
            request,
            make(Some(address.trim_matches(['<', '>']).to_string())),
        ),
        _ => request
            .errors
            .push(format!("{verb}: expected at most one address")),
    };
    match verb.as_str() {
        "subscribe" | "join" => optional_address(Command::Subscribe, request),
        "unsubscribe" | "leave" | "signoff" => optional_address(Command::Unsubscribe, request),
        "help" => push(request, Command::Help),
        "who" | "members" => push(request, Command::Who),
        "confirm" => with_token(Command::Confirm, request),
        "approve" => with_token(Command::Approve, request),
        "reject" => with_token(Command::Reject, request),
        // Prose, a greeting: not a command, and not an error either.
        _ => {}
    }
}

fn push(request: &mut Request, command: Command) {
    if !request.commands.contains(&command) {
        request.commands.push(command);
    }
}

/// The subject without `Re:`, `Fwd:` and the like in front.
pub fn strip_reply_prefixes(subject: &str) -> &str {
    let mut rest = subject.trim();
    loop {
        let lower = rest.to_lowercase();
        let Some(p) = ["re:", "aw:", "sv:", "fw:", "fwd:", "tr:", "wg:"]
            .into_iter()
            .find(|p| lower.starts_with(p))
        else {
            return rest;
        };
        rest = rest[p.len()..].trim_start();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_in_the_subject_and_body() {
        let r = parse(Some("subscribe"), "");
        assert_eq!(r.commands, [Command::Subscribe(None)]);
        let r = parse(Some("Re: confirm abc.def"), "> confirm old.token\nthanks\n");
        assert_eq!(r.commands, [Command::Confirm("abc.def".into())]);
        let r = parse(
            None,
            "Hello,\n\nWHO\nunsubscribe <bob@far.example>\n--\nsubscribe\n",
        );
        assert_eq!(
            r.commands,
            [
                Command::Who,
                Command::Unsubscribe(Some("bob@far.example".into()))
            ]
        );
        assert!(r.errors.is_empty());
    }

    #[test]
    fn malformed_commands_are_reported_precisely() {
        let r = parse(Some("confirm"), "approve a b\nsubscribe a@b c@d\n");
        assert!(r.commands.is_empty());
        assert_eq!(
            r.errors,
            [
                "confirm: the token is missing",
                "approve: expected one token, got 2 words",
                "subscribe: expected at most one address"
            ]
        );
    }

    #[test]
    fn repeats_count_once_and_reading_stops() {
        let r = parse(Some("help"), "help\nend\nwho\n");
        assert_eq!(r.commands, [Command::Help]);
        let many = "blah\n".repeat(MAX_LINES) + "who\n";
        assert!(parse(None, &many).commands.is_empty());
    }
}
