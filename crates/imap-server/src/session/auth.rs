//! LOGIN and AUTHENTICATE PLAIN (with SASL-IR), and IDLE.

use imap_next::server::ResponseHandle;

use super::*;

impl Session {
    /// Takes responses out of imap-next until the one with `handle` is out.
    fn drain_until(&mut self, handle: ResponseHandle) {
        loop {
            match self.server.next() {
                Err(Interrupt::Io(Io::Output(bytes))) => self.out.extend_from_slice(&bytes),
                Ok(Event::ResponseSent { handle: h, .. }) if h == handle => return,
                Ok(Event::ResponseSent { .. } | Event::GreetingSent { .. }) => {}
                other => {
                    // Cannot happen: imap-next sends what is queued before it reads.
                    warn!(event = ?other.map(|_| ()), "unexpected parser state");
                    return;
                }
            }
        }
    }

    pub(super) fn authenticate(
        &mut self,
        tag: Tag<'static>,
        mechanism: AuthMechanism<'static>,
        initial: Option<Vec<u8>>,
    ) {
        if self.user.is_some() {
            self.finish_authenticate(&tag, false, "already logged in");
            self.count_error();
            return;
        }
        if !self.login_allowed() {
            self.finish_authenticate_code(&tag, "PRIVACYREQUIRED", "log in over TLS (STARTTLS)");
            return;
        }
        if mechanism != AuthMechanism::Plain {
            self.finish_authenticate(&tag, false, "unsupported mechanism; use PLAIN");
            return;
        }
        match initial {
            Some(data) => self.plain(tag, &data),
            None => match self
                .server
                .authenticate_continue(CommandContinuationRequest::base64(Vec::new()))
            {
                Ok(handle) => {
                    self.drain_until(handle);
                    self.waiting = Waiting::AuthData { tag };
                }
                Err(_) => self.finish_authenticate(&tag, false, "authentication failed"),
            },
        }
    }

    pub(super) fn authenticate_data(&mut self, data: AuthenticateData<'static>) {
        let Waiting::AuthData { tag } = std::mem::replace(&mut self.waiting, Waiting::Nothing)
        else {
            return;
        };
        match data {
            AuthenticateData::Cancel => {
                self.finish_authenticate_status(&tag, "BAD", None, "authentication cancelled");
            }
            AuthenticateData::Continue(data) => {
                let data = data.declassify().to_vec();
                self.plain(tag, &data);
            }
        }
    }

    /// RFC 4616: `authzid NUL authcid NUL password`.
    fn plain(&mut self, tag: Tag<'static>, data: &[u8]) {
        let mut parts = data.split(|&b| b == 0);
        let (Some(authz), Some(authc), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            self.finish_authenticate(&tag, false, "malformed PLAIN response");
            self.count_error();
            return;
        };
        if !authz.is_empty() && authz != authc {
            self.finish_authenticate(&tag, false, "cannot act for another user");
            return;
        }
        self.waiting = Waiting::Login {
            tag,
            authenticate: true,
            credentials: Some(Credentials {
                login: String::from_utf8_lossy(authc).into_owned(),
                password: Secret::new(password.to_vec()),
                mechanism: "PLAIN",
            }),
        };
    }

    pub(super) fn finish_authenticate(&mut self, tag: &Tag<'static>, ok: bool, text: &'static str) {
        let code = if ok {
            None
        } else {
            Some(Code::Other(
                imap_next::imap_types::response::CodeOther::unvalidated(
                    &b"AUTHENTICATIONFAILED"[..],
                ),
            ))
        };
        let kind = if ok { "OK" } else { "NO" };
        self.finish_authenticate_status(tag, kind, code, text);
    }

    fn finish_authenticate_code(
        &mut self,
        tag: &Tag<'static>,
        code: &'static str,
        text: &'static str,
    ) {
        let code = Code::Other(imap_next::imap_types::response::CodeOther::unvalidated(
            code.as_bytes(),
        ));
        self.finish_authenticate_status(tag, "NO", Some(code), text);
    }

    fn finish_authenticate_status(
        &mut self,
        tag: &Tag<'static>,
        kind: &str,
        code: Option<Code<'static>>,
        text: &'static str,
    ) {
        let wire = Text::unvalidated(text);
        let status = match kind {
            "OK" => Status::ok(Some(tag.clone()), code, wire),
            "BAD" => Status::bad(Some(tag.clone()), code, wire),
            _ => Status::no(Some(tag.clone()), code, wire),
        };
        let Ok(status) = status;
        match self.server.authenticate_finish(status) {
            Ok(handle) => self.drain_until(handle),
            // Not in an AUTHENTICATE exchange: answer directly.
            Err(_) => self.tagged(tag.as_ref(), kind, None, text),
        }
    }

    /// The outcome of the login the session asked for with [`Action::Login`].
    pub fn login_done(&mut self, result: LoginResult) {
        let Waiting::Login {
            tag, authenticate, ..
        } = std::mem::replace(&mut self.waiting, Waiting::Nothing)
        else {
            return;
        };
        let failure = |s: &mut Session, code: &'static str, text: &'static str| {
            if authenticate {
                s.finish_authenticate_code(&tag, code, text);
            } else {
                s.no(&tag, Some(code), text);
            }
        };
        match result {
            LoginResult::Accepted(address) => match open_mailbox(&self.settings, &address) {
                Ok(mailbox) => {
                    self.user = Some(User { address, mailbox });
                    if authenticate {
                        self.finish_authenticate_status(&tag, "OK", None, "logged in");
                    } else {
                        let caps = capabilities(&self.settings, true).join(" ");
                        self.ok(&tag, Some(&format!("CAPABILITY {caps}")), "logged in");
                    }
                }
                Err(e) => {
                    warn!(user = %address, error = %e, "cannot open the mailbox");
                    failure(
                        self,
                        "UNAVAILABLE",
                        "your mailbox cannot be opened now; try later",
                    );
                }
            },
            LoginResult::Rejected => {
                self.login_failures += 1;
                failure(self, "AUTHENTICATIONFAILED", "wrong login or password");
                if self.login_failures >= self.settings.max_login_failures {
                    self.bye("too many failed logins");
                    self.closing = true;
                }
            }
            LoginResult::Blocked => {
                failure(
                    self,
                    "UNAVAILABLE",
                    "too many failed logins from your address; try later",
                );
            }
            LoginResult::TooManySessions => {
                failure(
                    self,
                    "LIMIT",
                    "too many sessions of this user; close some first",
                );
            }
            LoginResult::TemporaryFailure => {
                failure(
                    self,
                    "UNAVAILABLE",
                    "logins are not possible now; try later",
                );
            }
        }
    }

    pub(super) fn idle(&mut self, tag: Tag<'static>) {
        if self.user.is_none() {
            if let Ok(status) = Status::bad(Some(tag), None, "log in first")
                && let Ok(handle) = self.server.idle_reject(status)
            {
                self.drain_until(handle);
            }
            self.count_error();
            return;
        }
        let Ok(cont) = CommandContinuationRequest::basic(None, "idling") else {
            return;
        };
        match self.server.idle_accept(cont) {
            Ok(handle) => {
                self.drain_until(handle);
                self.waiting = Waiting::Idle { tag };
                self.sync(true);
            }
            Err(_) => self.bad(&tag, "cannot idle now"),
        }
    }

    pub(super) fn idle_done(&mut self) {
        let Waiting::Idle { tag } = std::mem::replace(&mut self.waiting, Waiting::Nothing) else {
            return;
        };
        if self.sync(true) {
            self.ok(&tag, None, "IDLE terminated");
        }
    }

    /// The watched folder changed during IDLE: tells the client.
    pub fn idle_changed(&mut self) {
        if matches!(self.waiting, Waiting::Idle { .. }) {
            self.sync(true);
        }
    }
}

/// Opens a user's mailbox, making the special-use folders if they are missing.
fn open_mailbox(settings: &Settings, address: &str) -> Result<Mailbox, StoreError> {
    let (local, domain) =
        address
            .rsplit_once('@')
            .ok_or_else(|| StoreError::InvalidFolderName {
                name: address.to_owned(),
                reason: "not an address",
            })?;
    let root = qs_mailstore::mailbox_path(&settings.data_dir, domain, local)?;
    let mailbox = Mailbox::open(root, &settings.hostname)?;
    for use_ in qs_mailstore::SpecialUse::ALL {
        mailbox.special_folder(use_)?;
    }
    Ok(mailbox)
}
