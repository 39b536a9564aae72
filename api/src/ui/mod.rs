//! The dashboard served under `/ui/`: server-rendered HTML pages (overview, services, one
//! service, nodes, one node) built from the same handlers that answer `/v1`, live updates
//! through `/ui/watch` (the `/v1/watch` stream, authorised by the session cookie), and the
//! actions a role allows (write: scale and undo a rollout; admin: also drain and activate
//! nodes), each behind a confirmation and a CSRF token.
//!
//! Where the API has tokens, a browser signs in on `/ui/login` with one; the server keeps a
//! [`session::Session`] and the browser an HttpOnly, SameSite=Strict cookie. Without tokens
//! (loopback, `shoal dev`) there is no sign-in and every action is allowed; forms still carry
//! a CSRF token (one per process) so other web sites cannot post to a local API.
//!
//! Pages: [`pages`]; data: [`data`]; actions: [`actions`]; assets: [`assets`].

pub mod actions;
pub mod assets;
pub mod data;
pub mod pages;
pub mod session;

use axum::Router;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};

use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::{ApiState, watch};

/// Why a dashboard request failed.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No live session (or its token was revoked): sign in first.
    #[error("sign in to see the dashboard")]
    SignIn,
    /// The form's CSRF token is missing or is not this session's.
    #[error(
        "the form is stale or came from another site (CSRF token mismatch); reload the page and try again"
    )]
    Csrf,
    /// The token's role does not allow the action, or cannot use the dashboard.
    #[error("{0}")]
    Forbidden(String),
    /// The API refused or failed.
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl UiError {
    fn status(&self) -> StatusCode {
        match self {
            UiError::SignIn => StatusCode::UNAUTHORIZED,
            UiError::Csrf | UiError::Forbidden(_) => StatusCode::FORBIDDEN,
            UiError::Api(e) => e.status(),
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        if matches!(self, UiError::SignIn) {
            return Redirect::to("/ui/login").into_response();
        }
        let status = self.status();
        (status, pages::error_page(status, &self.to_string())).into_response()
    }
}

/// Who is looking at the dashboard: the principal of the session's token (or the local
/// principal without tokens) and the CSRF token forms must carry.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// What the viewer may do.
    pub principal: Principal,
    /// The CSRF token of the session (or of the process, without tokens).
    pub csrf: String,
    /// Whether the viewer signed in (false without tokens).
    pub signed_in: bool,
}

impl Viewer {
    /// `Csrf` unless `presented` is the viewer's CSRF token.
    pub fn check_csrf(&self, presented: &str) -> Result<(), UiError> {
        use subtle::ConstantTimeEq;
        if bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes())) {
            Ok(())
        } else {
            Err(UiError::Csrf)
        }
    }
}

impl FromRequestParts<ApiState> for Viewer {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, st: &ApiState) -> Result<Self, UiError> {
        let Some(tokens) = &st.tokens else {
            return Ok(Viewer {
                principal: Principal::local(),
                csrf: st.ui.local_csrf().to_string(),
                signed_in: false,
            });
        };
        let jar = CookieJar::from_headers(&parts.headers);
        let session = jar
            .get(session::COOKIE)
            .and_then(|c| st.ui.get(c.value()))
            .ok_or(UiError::SignIn)?;
        let table = tokens.table();
        let entry = table.get(&session.token_id).ok_or(UiError::SignIn)?;
        let principal = entry.principal().clone();
        if principal.role() == Role::Node {
            return Err(UiError::Forbidden(
                "node tokens cannot use the dashboard".into(),
            ));
        }
        Ok(Viewer {
            principal,
            csrf: session.csrf,
            signed_in: true,
        })
    }
}

/// The dashboard's routes (outside the bearer-token middleware: they use [`Viewer`]).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(pages::overview))
        .route("/ui/services", get(pages::services))
        .route("/ui/services/{ns}/{name}", get(pages::service))
        .route("/ui/services/{ns}/{name}/scale", post(actions::scale))
        .route("/ui/services/{ns}/{name}/rollback", post(actions::rollback))
        .route("/ui/nodes", get(pages::nodes))
        .route("/ui/nodes/{id}", get(pages::node))
        .route("/ui/nodes/{id}/availability", post(actions::availability))
        .route("/ui/login", get(pages::login).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/watch", get(live))
        .route("/ui/assets/{file}", get(assets::serve))
        .layer(axum::middleware::map_response(security_headers))
}

/// Headers on every dashboard answer: nothing but this origin may run, load or frame.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Body of the sign-in form.
#[derive(Debug, serde::Deserialize)]
pub struct LoginForm {
    /// The API token (`ID.SECRET`).
    pub token: String,
}

/// Signs in: checks the token, opens a session and sets its cookie.
async fn login(
    State(st): State<ApiState>,
    jar: CookieJar,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let Some(tokens) = &st.tokens else {
        return Redirect::to("/ui/").into_response();
    };
    let table = tokens.table();
    let Some(principal) = table.authenticate(form.token.trim()) else {
        tracing::info!(target: "shoal_api::audit", "dashboard sign-in refused");
        return (
            StatusCode::UNAUTHORIZED,
            pages::login_page(Some("That token was not accepted.")),
        )
            .into_response();
    };
    if principal.role() == Role::Node {
        return (
            StatusCode::FORBIDDEN,
            pages::login_page(Some("Node tokens cannot use the dashboard.")),
        )
            .into_response();
    }
    tracing::info!(target: "shoal_api::audit", token = %principal.token_id(), role = %principal.role(), "dashboard sign-in");
    let value = st.ui.open(principal.token_id());
    let cookie = Cookie::build((session::COOKIE, value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(st.tls)
        .path("/ui");
    (jar.add(cookie), Redirect::to("/ui/")).into_response()
}

/// Body of forms that carry only the CSRF token.
#[derive(Debug, serde::Deserialize)]
pub struct CsrfForm {
    /// The session's CSRF token.
    pub csrf: String,
}

/// Signs out: ends the session and clears the cookie.
async fn logout(
    State(st): State<ApiState>,
    viewer: Viewer,
    jar: CookieJar,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, UiError> {
    viewer.check_csrf(&form.csrf)?;
    if let Some(c) = jar.get(session::COOKIE) {
        st.ui.close(c.value());
    }
    let jar = jar.remove(Cookie::build(session::COOKIE).path("/ui"));
    Ok((jar, Redirect::to("/ui/login")).into_response())
}

/// The live-update stream: `/v1/watch`, authorised by the session cookie.
async fn live(
    State(st): State<ApiState>,
    viewer: Result<Viewer, UiError>,
    q: Query<watch::WatchQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = viewer {
        // EventSource cannot follow a redirect to a form: answer 401 and let the script
        // send the browser to the sign-in page.
        return (e.status(), e.to_string()).into_response();
    }
    match watch::watch(State(st), q, headers).await {
        Ok(sse) => sse.into_response(),
        Err(e) => e.into_response(),
    }
}
