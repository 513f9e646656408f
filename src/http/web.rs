//! The browser client at `/`: its three files and the client library it is
//! built on (`clients/js/dist`, served under `/client/`) are compiled into
//! the binary, so the one run command serves a working chat. A strict Content-Security-Policy
//! allows only this origin (and, with attachments in an object store, that
//! store, for uploads and pictures): no other request, no inline script.

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

const INDEX: &str = include_str!("../../web/index.html");
/// The client's scripts, each a module at `/<name>`.
const SCRIPTS: &[(&str, &str)] = &[
    ("app.js", include_str!("../../web/app.js")),
    ("conversation.js", include_str!("../../web/conversation.js")),
    ("ui.js", include_str!("../../web/ui.js")),
];
const STYLE: &str = include_str!("../../web/style.css");

/// A built module of the client library, by its file name.
macro_rules! module {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../clients/js/dist/", $name)),
        )
    };
}

/// The client library's modules as the browser loads them: `@ochat/client`
/// built (`npm run build` in clients/js; CI checks the files are current).
/// Only the modules that run: the generated ones hold types alone.
const LIBRARY: &[(&str, &str)] = &[
    module!("index.js"),
    module!("client.js"),
    module!("backoff.js"),
    module!("connection.js"),
    module!("emitter.js"),
    module!("errors.js"),
    module!("feed.js"),
    module!("messages.js"),
    module!("methods.js"),
    module!("outbox.js"),
    module!("rest.js"),
    module!("storage.js"),
    module!("sync.js"),
    module!("token.js"),
];

/// The policy; `files`: the origin of the object store attachments live in.
pub fn policy(files: Option<&str>) -> String {
    let files = files.map(|o| format!(" {o}")).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'{files}; \
         img-src 'self' data:{files}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

pub fn router(files: Option<&str>) -> Router<AppState> {
    let policy = HeaderValue::from_str(&policy(files)).expect("an origin is a valid header");
    let serve = |content_type: &'static str, body: &'static str| {
        let policy = policy.clone();
        get(move || async move { asset(content_type, body, policy) })
    };
    let mut router = Router::new()
        .route("/", serve("text/html; charset=utf-8", INDEX))
        .route("/style.css", serve("text/css; charset=utf-8", STYLE));
    for (name, body) in SCRIPTS {
        router = router.route(
            &format!("/{name}"),
            serve("text/javascript; charset=utf-8", body),
        );
    }
    for (name, body) in LIBRARY {
        router = router.route(
            &format!("/client/{name}"),
            serve("text/javascript; charset=utf-8", body),
        );
    }
    router
}

fn asset(content_type: &'static str, body: &'static str, policy: HeaderValue) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (CONTENT_SECURITY_POLICY, policy),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (
                HeaderName::from_static("referrer-policy"),
                HeaderValue::from_static("no-referrer"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::{LIBRARY, SCRIPTS};

    /// The browser client leaves the protocol to the library: no socket,
    /// no frames, no idempotency keys of its own.
    #[test]
    fn the_browser_client_speaks_no_protocol_itself() {
        for (name, body) in SCRIPTS {
            for word in [
                "WebSocket",
                "/ws",
                "client_id",
                "\"ack\"",
                "\"sync\"",
                "mark_read",
                "cursor",
            ] {
                assert!(!body.contains(word), "web/{name} mentions {word}");
            }
        }
    }

    /// Every module a served module imports is served too: the library's
    /// own (`./x.js`), and the client's (`/x.js`) or the library's
    /// (`/client/x.js`) from the client's scripts. A module either gains
    /// cannot be missing in browsers.
    #[test]
    fn served_modules_import_only_served_modules() {
        let names = |list: &[(&'static str, &'static str)]| -> Vec<&'static str> {
            list.iter().map(|(name, _)| *name).collect()
        };
        let (library, scripts) = (names(LIBRARY), names(SCRIPTS));
        let imports = |body: &'static str| {
            body.split("from \"")
                .skip(1)
                .map(|rest| rest.split('"').next().unwrap())
                .collect::<Vec<_>>()
        };
        for (name, body) in LIBRARY {
            for target in imports(body) {
                let module = target.strip_prefix("./").unwrap_or(target);
                assert!(
                    library.contains(&module),
                    "{name} imports {target}, which is not served"
                );
            }
        }
        for (name, body) in SCRIPTS {
            for target in imports(body) {
                let served = match target.strip_prefix("/client/") {
                    Some(module) => library.contains(&module),
                    None => scripts.contains(&target.trim_start_matches('/')),
                };
                assert!(served, "web/{name} imports {target}, which is not served");
            }
        }
    }
}
