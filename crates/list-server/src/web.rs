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
//! framing and forms only to this site, and `Referrer-Policy: no-referrer`
//! so tokens in addresses do not leak.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use qs_directory::mailing_list::{Decision, ListError};
use qs_service::shutdown::Shutdown;
use serde::Deserialize;
use tracing::{info, warn};

use crate::headers::url_segment;
use crate::server::{ActionError, Shared};
use crate::token::{Action, TokenError};

/// Serves the page on `listener` until `shutdown` fires.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>, mut shutdown: Shutdown) {
    let app = router(shared);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await;
    if let Err(e) = served {
        warn!(error = %e, "the web page stopped");
    }
}

/// The routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok" }))
        .route("/list/{address}", get(list_page).post(list_request))
        .route("/confirm/{token}", get(confirm_page).post(confirm_do))
        .route("/u/{token}", get(one_click_page).post(one_click_do))
        .route("/moderate/{token}", get(moderate_page).post(moderate_do))
        .with_state(shared)
}

type AppState = State<Arc<Shared>>;

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
        HeaderValue::from_static("no-referrer"),
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

async fn index(State(shared): AppState) -> Response {
    let mut items = String::new();
    for list in shared.lists.all().into_iter().filter(|l| l.settings.listed) {
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

async fn list_page(State(shared): AppState, Path(address): Path<String>) -> Response {
    let list = match shared.lists.load(&address) {
        Ok(l) => l,
        Err(e) => return failure(&e.into()),
    };
    let body = format!(
        "<p>{desc}</p>\n<p>Posts go to <a href=\"mailto:{a}\">{a}</a>.</p>\n\
         <form method=\"post\" action=\"/list/{seg}\">\n\
         <label>Your address <input type=\"email\" name=\"email\" required autocomplete=\"email\"></label>\n\
         <label><input type=\"radio\" name=\"action\" value=\"subscribe\" checked> Subscribe</label>\n\
         <label><input type=\"radio\" name=\"action\" value=\"unsubscribe\"> Unsubscribe</label>\n\
         <button type=\"submit\">Send me a confirmation</button>\n</form>\n\
         <p>A message will ask you to confirm; nothing changes until you do.</p>",
        desc = escape(&list.description),
        a = escape(&list.address),
        seg = url_segment(&list.address),
    );
    page(StatusCode::OK, list.display_title(), &body)
}

/// The subscription form.
#[derive(Debug, Deserialize)]
struct ListForm {
    email: String,
    action: String,
}

async fn list_request(
    State(shared): AppState,
    Path(address): Path<String>,
    Form(form): Form<ListForm>,
) -> Response {
    let list = match shared.lists.load(&address) {
        Ok(l) => l,
        Err(e) => return failure(&e.into()),
    };
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
    match shared
        .request_confirmation(&list, &form.email, action)
        .await
    {
        Ok(()) => page(
            StatusCode::OK,
            "Check your mail",
            &format!(
                "<p>If the request applies, a message has been sent to <b>{}</b>. \
                 Follow it to confirm; nothing changes until you do.</p>",
                escape(&form.email)
            ),
        ),
        Err(e) => failure(&e),
    }
}

async fn confirm_page(State(shared): AppState, Path(token): Path<String>) -> Response {
    let t = match shared.check_unused(&token, None).await {
        Ok(t) => t,
        Err(e) => return failure(&e),
    };
    let what = match t.action {
        Action::Subscribe => "Subscribe",
        Action::Unsubscribe | Action::OneClick => "Unsubscribe",
        Action::Moderate => return failure(&ActionError::Token(TokenError::Invalid)),
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

async fn confirm_do(State(shared): AppState, Path(token): Path<String>) -> Response {
    match shared.confirm(&token, None).await {
        Ok(done) => page(StatusCode::OK, "Done", &format!("<p>{}</p>", escape(&done))),
        Err(e) => failure(&e),
    }
}

async fn one_click_page(State(shared): AppState, Path(token): Path<String>) -> Response {
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
async fn one_click_do(State(shared): AppState, Path(token): Path<String>) -> Response {
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

async fn moderate_page(State(shared): AppState, Path(token): Path<String>) -> Response {
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
    State(shared): AppState,
    Path(token): Path<String>,
    Form(form): Form<ModerateForm>,
) -> Response {
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
    match shared.moderate(&token, None, decision).await {
        Ok(done) => page(StatusCode::OK, "Done", &format!("<p>{}</p>", escape(&done))),
        Err(e) => failure(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
