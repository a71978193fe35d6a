//! The lists' web page (Mercury's MercuryB): server-rendered HTML forms that
//! work without JavaScript.
//!
//! | request | does |
//! |---|---|
//! | `GET /` | the lists marked `listed` |
//! | `GET /list/ADDRESS` | the list's title, description and a subscribe/unsubscribe form |
//! | `POST /list/ADDRESS` (`email`, `action`) | sends a confirmation mail; the answer does not say whether the address is a member |
//! | `GET /confirm/TOKEN` | what the token does, with a button (a used token: 410 and why) |
//! | `POST /confirm/TOKEN` | does it, once |
//! | `GET /u/TOKEN` | a page with an unsubscribe button |
//! | `POST /u/TOKEN` | RFC 8058 one-click unsubscription (`List-Unsubscribe=One-Click`), once |
//! | `GET /moderate/TOKEN` | a held post's sender and subject, approve and reject buttons |
//! | `POST /moderate/TOKEN` (`decision`) | records the decision, once |
//! | `GET /healthz` | `ok` |
//!
//! A GET never changes anything (mail scanners and browsers prefetch links);
//! every change is a POST carrying a signed, expiring, single-use token.
//! Pages are sent with a Content-Security-Policy that allows no script, no
//! framing and forms only to this site, and `Referrer-Policy: same-origin`
//! so tokens in addresses do not leak to other sites (`no-referrer` would
//! also make browsers send `Origin: null` with the page's own forms).
//!
//! # Security
//! - Every POST from a browser must come from this site: an `Origin` other
//!   than `list_server.web_url`'s (or the address the connection reached),
//!   or a `Sec-Fetch-Site` other than `same-origin`, gets 403 before any
//!   handler runs. A client that sends neither (a mail provider's RFC 8058
//!   POST, a script) is let through; the tokens still apply.
//! - The subscription form carries a CSRF token: a signed [`Action::Form`]
//!   token naming the list and the value of the browser's `qs_form` cookie
//!   (random, HttpOnly, SameSite=Strict, set by the list's page). A POST
//!   without both, or whose token names another list or cookie, gets 403.
//!   The other forms carry their own signed token in their address.
//! - A confirmation mail goes to one address for one list at most once in
//!   `confirm_window_secs` ([`Shared::request_confirmation`]); a client
//!   address may ask `web_requests_per_ip_per_hour` times an hour (an IPv6
//!   client counts by its /64), then gets 429.
//!
//! # Limits
//! Connections are admitted by [`qs_service::accept`] within
//! `web_max_connections` and `web_max_connections_per_ip` (one over gets a
//! 503 and is closed). hyper reads each request head within
//! `web_head_timeout_secs`, counted from when it starts waiting, so headers
//! sent a byte at a time are cut off; a connection that waits for its first
//! or next request longer than `web_idle_timeout_secs` is closed. A request
//! must be answered within `web_request_timeout_secs` (408, which also ends
//! bodies that trickle in), and its body is at most `web_max_body_bytes`
//! (413). A list address over 254 characters is refused with 400.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Extension, Form, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use qs_config::ListServerConfig;
use qs_directory::mailing_list::{Decision, ListError, MailingList, check_list_address};
use qs_service::accept::{self, Admitted, ConnectionLimits, Connections, Listening};
use qs_service::shutdown::Shutdown;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;
use tracing::{Instrument, debug, info, warn};

use crate::actions::{ActionError, Requested, Shared};
use crate::headers::url_segment;
use crate::token::{Action, TokenError};

/// The config key of the page's listener, for logs.
const LISTENER_KEY: &str = "list_server.web_listen";
/// What a client over a connection limit reads before the connection is closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    Content-Type: text/plain; charset=utf-8\r\nRetry-After: 10\r\nConnection: close\r\n\
    Content-Length: 52\r\n\r\nToo many connections to this page; try again later.\n";
/// The cookie the subscription form's token is tied to.
const FORM_COOKIE: &str = "qs_form";
/// The longest address a list can have: RFC 5321's 256-octet path, less
/// its angle brackets.
const MAX_LIST_ADDRESS: usize = 254;
/// Subscription requests are counted per client address over this long.
const REQUEST_WINDOW: Duration = Duration::from_secs(3600);
/// Client addresses whose requests are counted before stale counts are swept.
const MAX_TRACKED_CLIENTS: usize = 4096;

/// The page's limits (`[list_server]`'s `web_*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebLimits {
    /// Open connections at once.
    pub max_connections: usize,
    /// Open connections at once from one client address.
    pub max_connections_per_ip: usize,
    /// The whole request head must arrive within this.
    pub head_timeout: Duration,
    /// A connection waits this long for its first or next request.
    pub idle_timeout: Duration,
    /// A request is answered within this, its body included.
    pub request_timeout: Duration,
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Subscription requests per client address per hour.
    pub requests_per_ip_per_hour: u32,
}

impl WebLimits {
    /// The limits of the config.
    pub fn from_config(l: &ListServerConfig) -> WebLimits {
        WebLimits {
            max_connections: l.web_max_connections,
            max_connections_per_ip: l.web_max_connections_per_ip,
            head_timeout: l.web_head_timeout,
            idle_timeout: l.web_idle_timeout,
            request_timeout: l.web_request_timeout,
            max_body_bytes: l.web_max_body_bytes,
            requests_per_ip_per_hour: l.web_requests_per_ip_per_hour,
        }
    }
}

/// What every request of the page shares.
struct Site {
    shared: Arc<Shared>,
    limits: WebLimits,
    /// The origin of `web_url`, as a browser sends it in `Origin`.
    origin: String,
    /// Whether the form cookie is marked `Secure` (`web_url` is https).
    secure_cookie: bool,
    requests: RequestsPerClient,
}

type AppState = State<Arc<Site>>;

/// The connection a request came on, put in its extensions.
#[derive(Debug, Clone, Copy)]
struct Client {
    /// The client's address.
    peer: SocketAddr,
    /// The address the client connected to.
    local: SocketAddr,
}

/// Serves the page on `listener` until `shutdown` fires, then lets the
/// requests under way finish (within `request_timeout`).
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: WebLimits,
    shutdown: Shutdown,
) {
    let site = Arc::new(Site {
        origin: origin_of(&shared.web_url),
        secure_cookie: shared.web_url.starts_with("https://"),
        requests: RequestsPerClient::new(limits.requests_per_ip_per_hour, REQUEST_WINDOW),
        shared,
        limits,
    });
    let app = router(site);
    let connections = Connections::new(ConnectionLimits {
        per_listener: vec![(LISTENER_KEY, limits.max_connections)],
        per_address: limits.max_connections_per_ip,
        per_user: usize::MAX,
    });
    let listening = vec![Listening {
        kind: (),
        key: LISTENER_KEY,
        listener,
    }];
    let sessions_shutdown = shutdown.clone();
    accept::serve(
        listening,
        &connections,
        &shutdown,
        |()| Some(TOO_MANY_CONNECTIONS),
        move |(), _key, stream, peer, admitted| {
            let span = tracing::info_span!("web", session = %accept::session_id(), %peer);
            tokio::spawn(
                connection(
                    app.clone(),
                    limits,
                    stream,
                    peer,
                    admitted,
                    sessions_shutdown.clone(),
                )
                .instrument(span),
            );
        },
    )
    .await;
    let left = connections
        .drain(limits.request_timeout + shutdown.extra_drain_time())
        .await;
    if left > 0 {
        warn!(
            connections = left,
            "the web page stopped with requests under way"
        );
    }
}

/// One connection: HTTP/1.1 by hyper, with the head and idle timeouts.
async fn connection(
    app: Router,
    limits: WebLimits,
    stream: TcpStream,
    peer: SocketAddr,
    _admitted: Admitted,
    mut shutdown: Shutdown,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let client = Client { peer, local };
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(client);
        app.clone().oneshot(request)
    });
    let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout);
    let served = http.serve_connection(io, service);
    tokio::pin!(served);
    let ended = tokio::select! {
        ended = served.as_mut() => ended,
        _ = shutdown.wait() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = ended {
        debug!(error = %e, "connection closed");
    }
}

/// A stream that fails with `TimedOut` once it has waited `idle` for a
/// request: from its start, or from the last bytes written (an answer),
/// until a byte arrives. While a request is read and answered it never
/// fails; hyper's head timeout and the request timeout bound that.
struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The timer is set for the present wait (from the start, or from the
    /// last answer).
    armed: bool,
    /// Bytes arrived since the last answer was written.
    in_request: bool,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, idle: Duration) -> IdleTimeout<S> {
        IdleTimeout {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            armed: false,
            in_request: false,
        }
    }

    /// After an answer is written the wait for the next request begins.
    /// The task is woken so that it reads again, and so polls the timer:
    /// hyper reads before it writes, and its read may be pending already.
    fn wrote(&mut self, cx: &Context<'_>, written: &Poll<io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) {
            self.in_request = false;
            let deadline = tokio::time::Instant::now() + self.idle;
            self.timer.as_mut().reset(deadline);
            self.armed = true;
            cx.waker().wake_by_ref();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.in_request = true;
                    this.armed = false;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.in_request => Poll::Pending,
            Poll::Pending => {
                if !this.armed {
                    let deadline = tokio::time::Instant::now() + this.idle;
                    this.timer.as_mut().reset(deadline);
                    this.armed = true;
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within web_idle_timeout_secs",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(cx, &written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(cx, &written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The routes, behind the checks every request passes.
fn router(site: Arc<Site>) -> Router {
    let limits = site.limits;
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok" }))
        .route("/list/{address}", get(list_page).post(list_request))
        .route("/confirm/{token}", get(confirm_page).post(confirm_do))
        .route("/u/{token}", get(one_click_page).post(one_click_do))
        .route("/moderate/{token}", get(moderate_page).post(moderate_do))
        .layer(middleware::from_fn_with_state(site.clone(), guard_posts))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            within_request_timeout,
        ))
        .with_state(site)
}

/// Answers 408 when a request (its body included) takes too long.
async fn within_request_timeout(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            info!("request timed out");
            page(
                StatusCode::REQUEST_TIMEOUT,
                "Too slow",
                "<p>The request took too long to arrive. Nothing was changed; please send it again.</p>",
            )
        }
    }
}

/// Refuses, before any handler runs, a POST sent by another site's page or
/// announcing a body over the limit.
async fn guard_posts(State(site): AppState, request: Request, next: Next) -> Response {
    if request.method() == Method::POST {
        let local = request.extensions().get::<Client>().map(|c| c.local);
        if let Err(why) = same_site(request.headers(), &site.origin, local) {
            info!(reason = why, "a POST from another site refused");
            return refused(why);
        }
        let announced = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > site.limits.max_body_bytes as u64) {
            return too_large(site.limits.max_body_bytes);
        }
    }
    next.run(request).await
}

/// Whether a browser says this request comes from a page of this site:
/// `Sec-Fetch-Site`, when sent, must be `same-origin`, and `Origin`, when
/// sent, must be `allowed` (web_url's) or that of the address the client
/// connected to (`local`). A request with neither is not from a browser
/// that tells, and is let through.
fn same_site(
    headers: &HeaderMap,
    allowed: &str,
    local: Option<SocketAddr>,
) -> Result<(), &'static str> {
    if let Some(fetch_site) = headers.get("sec-fetch-site")
        && fetch_site.as_bytes() != b"same-origin"
    {
        return Err("This form was sent from another site.");
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let direct = local.map(|l| origin_of(&format!("http://{l}")));
    if origin.eq_ignore_ascii_case(allowed)
        || direct.is_some_and(|d| origin.eq_ignore_ascii_case(&d))
    {
        Ok(())
    } else {
        Err("This form was sent from another site.")
    }
}

/// The origin (RFC 6454) of `url` as a browser writes it: scheme, host, and
/// the port when it is not the scheme's default.
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let host = host.strip_suffix(default_port).unwrap_or(&host);
    format!("{scheme}://{host}")
}

/// The page for a POST refused by the cross-site checks.
fn refused(why: &str) -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Refused",
        &format!(
            "<p>{} Nothing was changed. Open the list's page on this site and send the form from there.</p>",
            escape(why)
        ),
    )
}

/// The page for a body over `web_max_body_bytes`.
fn too_large(limit: usize) -> Response {
    page(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Too large",
        &format!("<p>The form sent is larger than this page accepts ({limit} bytes at most).</p>"),
    )
}

/// The page for a form that could not be read.
fn bad_form(rejection: &FormRejection, limit: usize) -> Response {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(limit),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => page(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Sorry",
            "<p>The form must be sent as application/x-www-form-urlencoded.</p>",
        ),
        _ => page(
            StatusCode::BAD_REQUEST,
            "Sorry",
            "<p>The form sent is incomplete or malformed.</p>",
        ),
    }
}

/// The browser's form cookie, when it sent a well-formed one.
fn form_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(FORM_COOKIE)?.strip_prefix('='))
        .find(|value| value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
}

/// The key client addresses are counted by: an IPv6 client by its /64,
/// since one host usually holds a whole /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// Subscription requests per client address, in windows of `window` that
/// begin at an address's first request. Memory is bounded: past
/// [`MAX_TRACKED_CLIENTS`] addresses the windows that are over are dropped.
struct RequestsPerClient {
    max: u32,
    window: Duration,
    counts: std::sync::Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RequestsPerClient {
    fn new(max: u32, window: Duration) -> RequestsPerClient {
        RequestsPerClient {
            max,
            window,
            counts: std::sync::Mutex::default(),
        }
    }

    /// Counts a request from `ip` at `now`; over the limit, counts nothing
    /// and returns how long until the address may ask again.
    fn count(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if counts.len() >= MAX_TRACKED_CLIENTS {
            counts.retain(|_, (since, _)| now.duration_since(*since) < self.window);
        }
        let (since, n) = counts.entry(client_key(ip)).or_insert((now, 0));
        if now.duration_since(*since) >= self.window {
            (*since, *n) = (now, 0);
        }
        if *n >= self.max {
            return Err(self.window.saturating_sub(now.duration_since(*since)));
        }
        *n += 1;
        Ok(())
    }
}

/// An HTML page with the security headers.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>body{{font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em;line-height:1.5}}\
         input,button{{font-size:1em;padding:.3em}}label{{display:block;margin:.5em 0}}</style></head>\
         <body><h1>{t}</h1>\n{body}\n<p><a href=\"/\">All lists</a></p></body></html>\n",
        t = escape(title)
    );
    let mut response = (status, html).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Text safe inside HTML elements and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page for a failed action.
fn failure(e: &ActionError) -> Response {
    let status = match e {
        ActionError::Token(TokenError::Used | TokenError::Expired) => StatusCode::GONE,
        ActionError::Token(_) => StatusCode::BAD_REQUEST,
        ActionError::List(ListError::UnknownList(_) | ListError::UnknownHeld { .. }) => {
            StatusCode::NOT_FOUND
        }
        _ if e.is_temporary() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    if e.is_temporary() {
        warn!(error = %e, "a web request failed");
        return page(
            status,
            "Please try again later",
            "<p>The server could not do this just now. Nothing was changed.</p>",
        );
    }
    page(
        status,
        "Sorry",
        &format!("<p>{}.</p>", escape(&sentence(&e.to_string()))),
    )
}

/// An error message (lower case, as Rust's are) as a sentence for a page.
fn sentence(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

async fn index(State(site): AppState) -> Response {
    let mut items = String::new();
    for list in site
        .shared
        .lists
        .all()
        .into_iter()
        .filter(|l| l.settings.listed)
    {
        items.push_str(&format!(
            "<li><a href=\"/list/{}\">{}</a> &lt;{}&gt;</li>\n",
            url_segment(&list.address),
            escape(list.display_title()),
            escape(&list.address)
        ));
    }
    let body = if items.is_empty() {
        "<p>No list is open to the public.</p>".to_string()
    } else {
        format!("<ul>\n{items}</ul>")
    };
    page(StatusCode::OK, "Mailing lists", &body)
}

/// Loads the list a page's address names; an address no list can have is
/// refused with 400, before the store is asked.
fn load_list(shared: &Shared, address: &str) -> Result<MailingList, Box<Response>> {
    if address.len() > MAX_LIST_ADDRESS {
        return Err(Box::new(page(
            StatusCode::BAD_REQUEST,
            "Sorry",
            &format!("<p>A list address has at most {MAX_LIST_ADDRESS} characters.</p>"),
        )));
    }
    check_list_address(address)
        .and_then(|_| shared.lists.load(address))
        .map_err(|e| Box::new(failure(&e.into())))
}

async fn list_page(
    State(site): AppState,
    Path(address): Path<String>,
    headers: HeaderMap,
) -> Response {
    let list = match load_list(&site.shared, &address) {
        Ok(l) => l,
        Err(refusal) => return *refusal,
    };
    // The form's token is tied to the browser's cookie: another site can
    // neither read the token nor make the browser send the cookie with it.
    let (cookie, new_cookie) = match form_cookie(&headers) {
        Some(cookie) => (cookie, false),
        None => (format!("{:032x}", rand::random::<u128>()), true),
    };
    let token = site.shared.signer.make(
        Action::Form,
        &list.address,
        &cookie,
        qs_queue::unix_now() + site.shared.form_expiry_secs,
    );
    let body = format!(
        "<p>{desc}</p>\n<p>Posts go to <a href=\"mailto:{a}\">{a}</a>.</p>\n\
         <form method=\"post\" action=\"/list/{seg}\">\n\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">\n\
         <label>Your address <input type=\"email\" name=\"email\" required autocomplete=\"email\"></label>\n\
         <label><input type=\"radio\" name=\"action\" value=\"subscribe\" checked> Subscribe</label>\n\
         <label><input type=\"radio\" name=\"action\" value=\"unsubscribe\"> Unsubscribe</label>\n\
         <button type=\"submit\">Send me a confirmation</button>\n</form>\n\
         <p>A message will ask you to confirm; nothing changes until you do.</p>",
        desc = escape(&list.description),
        a = escape(&list.address),
        seg = url_segment(&list.address),
        token = escape(&token),
    );
    let mut response = page(StatusCode::OK, list.display_title(), &body);
    if new_cookie {
        let cookie = format!(
            "{FORM_COOKIE}={cookie}; Path=/list; HttpOnly; SameSite=Strict{}",
            if site.secure_cookie { "; Secure" } else { "" }
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
    }
    response
}

/// The subscription form.
#[derive(Debug, Deserialize)]
struct ListForm {
    email: String,
    action: String,
    /// The CSRF token of the list's page.
    #[serde(default)]
    token: String,
}

/// Checks the form's CSRF token against the list and the browser's cookie.
fn check_form_token(
    site: &Site,
    list: &MailingList,
    token: &str,
    headers: &HeaderMap,
) -> Result<(), &'static str> {
    let t = match site.shared.signer.verify(token, qs_queue::unix_now()) {
        Ok(t) => t,
        Err(TokenError::Expired) => {
            return Err("This form has expired.");
        }
        Err(_) => return Err("This form was not sent from this site's page."),
    };
    let cookie = form_cookie(headers).ok_or(
        "Your browser did not send this site's cookie with the form; allow cookies for this site.",
    )?;
    if t.action != Action::Form
        || !t.list.eq_ignore_ascii_case(&list.address)
        || t.subject != cookie
    {
        return Err("This form was not sent from this site's page.");
    }
    Ok(())
}

async fn list_request(
    State(site): AppState,
    Path(address): Path<String>,
    client: Option<Extension<Client>>,
    headers: HeaderMap,
    form: Result<Form<ListForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => return bad_form(&rejection, site.limits.max_body_bytes),
    };
    let list = match load_list(&site.shared, &address) {
        Ok(l) => l,
        Err(refusal) => return *refusal,
    };
    if let Err(why) = check_form_token(&site, &list, &form.token, &headers) {
        info!(list = %list.address, reason = why, "a subscription form refused");
        return refused(why);
    }
    let action = match form.action.as_str() {
        "subscribe" => Action::Subscribe,
        "unsubscribe" => Action::Unsubscribe,
        _ => {
            return page(
                StatusCode::BAD_REQUEST,
                "Sorry",
                "<p>Choose subscribe or unsubscribe.</p>",
            );
        }
    };
    let peer = client.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(c)| c.peer.ip());
    if let Err(wait) = site.requests.count(peer, Instant::now()) {
        info!(%peer, "too many subscription requests from one address");
        let mut response = page(
            StatusCode::TOO_MANY_REQUESTS,
            "Please wait",
            &format!(
                "<p>Too many subscription requests came from your address in the last hour, \
                 so this one was not sent. Nothing was changed; please try again in {} minutes.</p>",
                wait.as_secs().div_ceil(60)
            ),
        );
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
        return response;
    }
    match site
        .shared
        .request_confirmation(&list, &form.email, action)
        .await
    {
        Ok(Requested::Sent) => page(
            StatusCode::OK,
            "Check your mail",
            &format!(
                "<p>If the request applies, a message has been sent to <b>{}</b>. \
                 Follow it to confirm; nothing changes until you do.</p>",
                escape(&form.email)
            ),
        ),
        Ok(Requested::AlreadySent { retry_after_secs }) => page(
            StatusCode::OK,
            "Already asked",
            &format!(
                "<p>A request for <b>{}</b> was made a short while ago; if it applied, a message \
                 was sent then, and no other is sent now. Follow that message to confirm, or ask \
                 again in {} minutes.</p>",
                escape(&form.email),
                retry_after_secs.div_ceil(60)
            ),
        ),
        Err(e) => failure(&e),
    }
}

async fn confirm_page(State(site): AppState, Path(token): Path<String>) -> Response {
    let shared = &site.shared;
    let t = match shared.check_unused(&token, None).await {
        Ok(t) => t,
        Err(e) => return failure(&e),
    };
    let what = match t.action {
        Action::Subscribe => "Subscribe",
        Action::Unsubscribe | Action::OneClick => "Unsubscribe",
        Action::Moderate | Action::Form => {
            return failure(&ActionError::Token(TokenError::Invalid));
        }
    };
    page(
        StatusCode::OK,
        &format!("{what} {}", t.subject),
        &format!(
            "<form method=\"post\" action=\"/confirm/{}\"><p>{what} <b>{}</b> {} <b>{}</b>?</p>\
             <button type=\"submit\">Confirm</button></form>",
            escape(&token),
            escape(&t.subject),
            if t.action == Action::Subscribe {
                "to"
            } else {
                "from"
            },
            escape(&t.list)
        ),
    )
}

async fn confirm_do(State(site): AppState, Path(token): Path<String>) -> Response {
    let shared = &site.shared;
    match shared.confirm(&token, None).await {
        Ok(done) => page(StatusCode::OK, "Done", &format!("<p>{}</p>", escape(&done))),
        Err(e) => failure(&e),
    }
}

async fn one_click_page(State(site): AppState, Path(token): Path<String>) -> Response {
    let shared = &site.shared;
    let t = match shared.check_unused(&token, None).await {
        Ok(t) if t.action == Action::OneClick => t,
        Ok(_) => return failure(&ActionError::Token(TokenError::Invalid)),
        Err(e) => return failure(&e),
    };
    page(
        StatusCode::OK,
        &format!("Leave {}", t.list),
        &format!(
            "<form method=\"post\" action=\"/u/{}\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
             <p>Stop sending <b>{}</b> to <b>{}</b>?</p><button type=\"submit\">Unsubscribe</button></form>",
            escape(&token),
            escape(&t.list),
            escape(&t.subject)
        ),
    )
}

/// RFC 8058: the body is `List-Unsubscribe=One-Click`; a mail provider posts
/// it without a person seeing a page, so the token alone decides.
async fn one_click_do(State(site): AppState, Path(token): Path<String>) -> Response {
    let shared = &site.shared;
    match shared.check(&token, None) {
        Ok(t) if t.action == Action::OneClick => {}
        Ok(_) => return failure(&ActionError::Token(TokenError::Invalid)),
        Err(e) => return failure(&e),
    }
    match shared.confirm(&token, None).await {
        Ok(done) => {
            info!(result = %done, "one-click unsubscription");
            page(
                StatusCode::OK,
                "Unsubscribed",
                &format!("<p>{}</p>", escape(&done)),
            )
        }
        // Already gone (a second click, or removed meanwhile): that is what was asked.
        Err(ActionError::List(ListError::UnknownMember { member, list })) => page(
            StatusCode::OK,
            "Unsubscribed",
            &format!(
                "<p>{} is not a member of {}.</p>",
                escape(&member),
                escape(&list)
            ),
        ),
        Err(e) => failure(&e),
    }
}

async fn moderate_page(State(site): AppState, Path(token): Path<String>) -> Response {
    let shared = &site.shared;
    let t = match shared.check_unused(&token, None).await {
        Ok(t) if t.action == Action::Moderate => t,
        Ok(_) => return failure(&ActionError::Token(TokenError::Invalid)),
        Err(e) => return failure(&e),
    };
    let (post, _) = match shared.lists.held_post(&t.list, &t.subject) {
        Ok(p) => p,
        Err(e) => return failure(&e.into()),
    };
    page(
        StatusCode::OK,
        &format!("A post held for {}", t.list),
        &format!(
            "<p>From: <b>{}</b><br>Subject: <b>{}</b><br>Held because {}.</p>\
             <form method=\"post\" action=\"/moderate/{}\">\
             <button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button> \
             <button type=\"submit\" name=\"decision\" value=\"reject\">Reject</button></form>",
            escape(&post.from),
            escape(&post.subject),
            escape(&post.reason),
            escape(&token)
        ),
    )
}

/// The moderation form.
#[derive(Debug, Deserialize)]
struct ModerateForm {
    decision: String,
}

async fn moderate_do(
    State(site): AppState,
    Path(token): Path<String>,
    form: Result<Form<ModerateForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => return bad_form(&rejection, site.limits.max_body_bytes),
    };
    let decision = match form.decision.as_str() {
        "approve" => Decision::Approve,
        "reject" => Decision::Reject,
        _ => {
            return page(
                StatusCode::BAD_REQUEST,
                "Sorry",
                "<p>Choose approve or reject.</p>",
            );
        }
    };
    match site.shared.moderate(&token, None, decision).await {
        Ok(done) => page(StatusCode::OK, "Done", &format!("<p>{}</p>", escape(&done))),
        Err(e) => failure(&e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn posts_from_other_sites_are_refused() {
        let ours = "https://lists.example.test";
        let local = Some(SocketAddr::from(([192, 0, 2, 7], 8025)));
        let ok = |pairs: &[(&'static str, &'static str)]| same_site(&headers(pairs), ours, local);
        // Not a browser, or one that says nothing: the tokens decide.
        assert_eq!(ok(&[]), Ok(()));
        assert_eq!(ok(&[("origin", "https://lists.example.test")]), Ok(()));
        assert_eq!(ok(&[("origin", "HTTPS://Lists.Example.Test")]), Ok(()));
        // The address the connection reached, without the proxy.
        assert_eq!(ok(&[("origin", "http://192.0.2.7:8025")]), Ok(()));
        assert_eq!(
            ok(&[
                ("origin", "https://lists.example.test"),
                ("sec-fetch-site", "same-origin")
            ]),
            Ok(())
        );
        for refused in [
            &[("origin", "https://attacker.example")][..],
            &[("origin", "null")],
            &[("origin", "http://lists.example.test")],
            &[("origin", "https://lists.example.test.attacker.example")],
            &[("origin", "http://192.0.2.7:8026")],
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
            &[("sec-fetch-site", "none")],
            &[
                ("origin", "https://lists.example.test"),
                ("sec-fetch-site", "cross-site"),
            ],
        ] {
            assert!(ok(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn origins_are_written_as_browsers_send_them() {
        assert_eq!(
            origin_of("https://Lists.Example/a/b"),
            "https://lists.example"
        );
        assert_eq!(
            origin_of("https://lists.example:443"),
            "https://lists.example"
        );
        assert_eq!(
            origin_of("http://lists.example:80/"),
            "http://lists.example"
        );
        assert_eq!(origin_of("http://127.0.0.1:8025"), "http://127.0.0.1:8025");
        assert_eq!(origin_of("http://[::1]:8025?x"), "http://[::1]:8025");
        assert_eq!(
            origin_of("https://user@lists.example"),
            "https://lists.example"
        );
    }

    #[test]
    fn the_form_cookie_is_found_among_others_and_must_be_well_formed() {
        let good = "0123456789abcdef0123456789ABCDEF";
        assert_eq!(
            form_cookie(&headers(&[(
                "cookie",
                "a=b; qs_form=0123456789abcdef0123456789ABCDEF; c=d"
            )])),
            Some(good.to_string())
        );
        assert_eq!(
            form_cookie(&headers(&[
                ("cookie", "a=b"),
                ("cookie", "qs_form=0123456789abcdef0123456789ABCDEF")
            ])),
            Some(good.to_string())
        );
        for bad in [
            "qs_form=short",
            "qs_form=0123456789abcdef0123456789abcdeg",
            "qs_formx=0123456789abcdef0123456789abcdef",
            "x_qs_form=0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(form_cookie(&headers(&[("cookie", bad)])), None, "{bad}");
        }
    }

    #[test]
    fn requests_are_counted_per_client_and_hour() {
        let requests = RequestsPerClient::new(2, REQUEST_WINDOW);
        let t0 = Instant::now();
        let a = IpAddr::from([192, 0, 2, 1]);
        let b = IpAddr::from([192, 0, 2, 2]);
        assert!(requests.count(a, t0).is_ok());
        assert!(requests.count(a, t0).is_ok());
        let wait = requests
            .count(a, t0 + Duration::from_secs(600))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(3000));
        assert!(
            requests.count(b, t0).is_ok(),
            "another client has its own count"
        );
        assert!(requests.count(a, t0 + REQUEST_WINDOW).is_ok(), "a new hour");
        // An IPv6 client counts by its /64.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(requests.count(v6("2001:db8::1"), t0).is_ok());
        assert!(requests.count(v6("2001:db8::ffff:2"), t0).is_ok());
        assert!(requests.count(v6("2001:db8::3"), t0).is_err());
        assert!(requests.count(v6("2001:db8:0:1::1"), t0).is_ok());
        assert_eq!(client_key(v6("::ffff:192.0.2.1")), a);
    }

    #[test]
    fn tracked_clients_are_swept_when_their_hour_is_over() {
        let requests = RequestsPerClient::new(1, REQUEST_WINDOW);
        let t0 = Instant::now();
        for n in 0..MAX_TRACKED_CLIENTS as u32 {
            assert!(requests.count(IpAddr::from(n.to_be_bytes()), t0).is_ok());
        }
        let later = t0 + REQUEST_WINDOW;
        assert!(
            requests
                .count(IpAddr::from([198, 51, 100, 1]), later)
                .is_ok()
        );
        assert_eq!(requests.counts.lock().unwrap().len(), 1);
    }

    #[test]
    fn the_refusal_is_a_whole_http_response() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.ends_with(&format!("\r\nContent-Length: {}", body.len())));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_waiting_for_a_request_times_out() {
        let (client, server) = tokio::io::duplex(1024);
        let mut server = IdleTimeout::new(server, Duration::from_secs(5));
        let mut buf = [0u8; 64];
        // Nothing comes: the wait ends with TimedOut.
        let e = server.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);

        // A request begun is not idle, however long it takes.
        let (mut client2, server2) = tokio::io::duplex(1024);
        let mut server2 = IdleTimeout::new(server2, Duration::from_secs(5));
        client2.write_all(b"GET / HT").await.unwrap();
        assert_eq!(server2.read(&mut buf).await.unwrap(), 8);
        let waited = tokio::time::timeout(Duration::from_secs(3600), server2.read(&mut buf)).await;
        assert!(waited.is_err(), "a request under way timed out: {waited:?}");
        // Once answered, the connection waits for the next one only so long.
        server2.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        let e = server2.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    /// hyper reads before it writes: a read pending while a request is
    /// handled must not be left waiting on the socket alone once the answer
    /// is written, or the idle timer would never be looked at.
    #[tokio::test(start_paused = true)]
    async fn writing_an_answer_wakes_the_reader_to_start_the_idle_timer() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        let waker = std::task::Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let (mut client, server) = tokio::io::duplex(1024);
        let mut server = IdleTimeout::new(server, Duration::from_secs(5));
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut storage = [0u8; 64];
        let mut buf = ReadBuf::new(&mut storage);
        assert!(
            Pin::new(&mut server)
                .poll_read(&mut cx, &mut buf)
                .is_ready()
        );
        let mut buf = ReadBuf::new(&mut storage);
        assert!(
            Pin::new(&mut server)
                .poll_read(&mut cx, &mut buf)
                .is_pending()
        );
        let before = count.0.load(std::sync::atomic::Ordering::SeqCst);
        let written = Pin::new(&mut server).poll_write(&mut cx, b"HTTP/1.1 200 OK\r\n\r\n");
        assert!(matches!(written, Poll::Ready(Ok(_))));
        assert!(count.0.load(std::sync::atomic::Ordering::SeqCst) > before);
    }

    #[test]
    fn error_messages_read_as_sentences() {
        assert_eq!(
            sentence("this link or token has expired"),
            "This link or token has expired"
        );
        assert_eq!(sentence("été"), "Été");
        assert_eq!(sentence(""), "");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
