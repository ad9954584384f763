//! API tokens: a random 32-byte secret shown once (`cb_` + 64 hex digits), stored as its
//! sha256; a role (viewer < operator < admin) and a council scope. A request carries it as
//! `Authorization: Bearer <token>`, or, in the web console, in the `cb_token` cookie
//! (HttpOnly, SameSite=Strict) set by the sign-in form; console forms that change something
//! also carry a CSRF value derived from the token.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::ApiState;
use crate::store::TokenRow;

/// Roles, weakest first.
pub const ROLES: &[&str] = &["viewer", "operator", "admin"];

/// A new secret: 32 random bytes from the operating system, hex, with a recognisable prefix.
pub fn new_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the system: {e}"))?;
    Ok(format!("cb_{}", hex::encode(bytes)))
}

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.trim().as_bytes()))
}

/// The CSRF value of the console's forms for this token.
pub fn csrf_for(secret: &str) -> String {
    hex::encode(Sha256::digest(
        format!("council-bridge csrf {}", secret.trim()).as_bytes(),
    ))[..32]
        .to_string()
}

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Their token.
    pub token: TokenRow,
    /// The secret they presented (for the CSRF value).
    pub secret: String,
}

impl Caller {
    /// The councils they may see (`None`: every council).
    pub fn scope(&self) -> Option<&[String]> {
        self.token.councils.as_deref()
    }
    /// Whether a council is in their scope.
    pub fn sees(&self, council: &str) -> bool {
        self.scope().is_none_or(|s| s.iter().any(|c| c == council))
    }
    /// Operators and admins may replay, discard, release and reveal.
    pub fn can_operate(&self) -> bool {
        self.token.role == "operator" || self.token.role == "admin"
    }
    /// How the audit log names them.
    pub fn actor(&self) -> String {
        format!("token {} ({})", self.token.id, self.token.name)
    }
    /// The CSRF value their console forms carry.
    pub fn csrf(&self) -> String {
        csrf_for(&self.secret)
    }
}

fn cookie(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn presented(parts: &Parts) -> Option<String> {
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    bearer.or_else(|| cookie(parts, "cb_token"))
}

async fn authenticate(parts: &Parts, state: &ApiState) -> Option<Caller> {
    let secret = presented(parts).filter(|s| !s.is_empty())?;
    let hash = hash_secret(&secret);
    let store = state.store.clone();
    let token = tokio::task::spawn_blocking(move || store.token_by_hash(&hash))
        .await
        .ok()?
        .ok()??;
    Some(Caller { token, secret })
}

/// The caller of an API endpoint: 401 without a live token.
pub struct ApiCaller(pub Caller);

impl FromRequestParts<ApiState> for ApiCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Response> {
        match authenticate(parts, state).await {
            Some(c) => Ok(ApiCaller(c)),
            None => Err((
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(json!({"error": "a valid API token is required (Authorization: Bearer <token>; `council-bridge tokens create`)"})),
            )
                .into_response()),
        }
    }
}

/// The caller of a console page: sent to the sign-in page without a live token.
pub struct PageCaller(pub Caller);

impl FromRequestParts<ApiState> for PageCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Response> {
        match authenticate(parts, state).await {
            Some(c) => Ok(PageCaller(c)),
            None => Err(Redirect::to("/console/login").into_response()),
        }
    }
}
