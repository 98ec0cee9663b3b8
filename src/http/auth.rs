//! Basic auth against the web config's bcrypt users, as the Prometheus exporter-toolkit does it.
//!
//! - A pair bcrypt accepted is cached, so a scraper pays bcrypt (~54 ms of CPU at cost 10) once,
//!   not on every scrape. Only accepted pairs are cached; a refused one is verified every time.
//!   The cache holds keyed SHA-256 digests of user, stored hash and password (never a password),
//!   and at most [`CACHE_CAPACITY`] of them.
//! - An unknown user name costs the same bcrypt work as a known one (a dummy verification), so
//!   response times do not tell which names exist.
//! - The scheme name is case-insensitive (RFC 7235 §2.1): `basic` and `BASIC` are `Basic`.
//! - At most [`bcrypt_concurrency`] verifications run at once, so a flood of wrong passwords
//!   cannot take every core from the scrapers whose credentials are cached.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// Verified pairs kept. A sidecar has a handful of scrapers and users; the bound only matters
/// when passwords rotate (old pairs are evicted, least recently used first).
pub(crate) const CACHE_CAPACITY: usize = 256;

/// Verifications that may run at once: half the cores, at least one. bcrypt is pure CPU, and
/// the other half keeps serving scrapers whose credentials are cached.
fn bcrypt_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

type Key = [u8; 32];

/// The configured users, their bcrypt hashes, and the cache of verified credentials.
pub(crate) struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Verified for unknown user names: the configured hash with the highest cost, so an unknown
    /// name takes as long as the slowest known one.
    dummy: String,
    /// Random per process: the cache's digests are worthless outside it.
    key: Key,
    /// Digest of (user, hash, password) to when it was last used (a tick of `clock`).
    cache: Mutex<HashMap<Key, u64>>,
    clock: AtomicU64,
    bcrypt: Arc<Semaphore>,
    /// bcrypt verifications started (known and unknown users): a test hook.
    bcrypt_calls: AtomicU64,
}

impl BasicAuth {
    /// Checks requests against `users` (name to bcrypt hash; at least one).
    pub(crate) fn new(users: BTreeMap<String, String>) -> Self {
        let cost = |hash: &String| hash.parse::<bcrypt::HashParts>().map_or(0, |p| p.get_cost());
        let dummy = users.values().max_by_key(|h| cost(h)).cloned().unwrap_or_default();
        Self {
            users,
            dummy,
            key: rand::random(),
            cache: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            bcrypt: Arc::new(Semaphore::new(bcrypt_concurrency())),
            bcrypt_calls: AtomicU64::new(0),
        }
    }

    #[cfg(test)]
    pub(crate) fn bcrypt_calls(&self) -> u64 {
        self.bcrypt_calls.load(Ordering::Relaxed)
    }

    fn digest(&self, user: &str, hash: &str, password: &[u8]) -> Key {
        let mut h = Sha256::new();
        h.update(self.key);
        // Length prefixes: no two different triples feed the same bytes.
        for part in [user.as_bytes(), hash.as_bytes(), password] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.finalize().into()
    }

    /// True if the cache holds `key` (and marks it used).
    fn cached(&self, key: &Key) -> bool {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        // A short critical section, never held across an await.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get_mut(key) {
            Some(used) => {
                *used = tick;
                true
            }
            None => false,
        }
    }

    fn remember(&self, key: Key) {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_CAPACITY && !cache.contains_key(&key) {
            if let Some(oldest) = cache.iter().min_by_key(|(_, used)| **used).map(|(k, _)| *k) {
                cache.remove(&oldest);
            }
        }
        cache.insert(key, tick);
    }

    /// Runs bcrypt off the async workers, at most `bcrypt_concurrency()` at once, and caches
    /// `key` if the password is accepted and `remember` is set. Before verifying, looks again
    /// whether `key` was cached while this request waited for its turn, so concurrent first
    /// scrapes with one pair pay once.
    async fn verify(&self, password: Vec<u8>, hash: String, key: Key, remember: bool) -> bool {
        let Ok(permit) = self.bcrypt.clone().acquire_owned().await else { return false };
        if self.cached(&key) {
            return true;
        }
        self.bcrypt_calls.fetch_add(1, Ordering::Relaxed);
        // The permit moves into the blocking task and comes back with the answer: a request
        // dropped mid-verification does not free its slot before bcrypt is done, and the next
        // waiter sees the pair cached.
        let outcome = tokio::task::spawn_blocking(move || (bcrypt::verify(password, &hash).unwrap_or(false), permit)).await;
        let Ok((ok, _permit)) = outcome else { return false };
        if ok && remember {
            self.remember(key);
        }
        ok
    }

    /// Whether `authorization` holds the credentials of a configured user.
    pub(crate) async fn check(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else { return false };
        let Some(hash) = self.users.get(&user) else {
            // The same steps as for a known user (digest, cache lookups, bcrypt), and the same
            // answer as a wrong password. The key is never cached: nothing is remembered for it.
            let key = self.digest(&user, &self.dummy, &password);
            let _ = self.cached(&key) || self.verify(password, self.dummy.clone(), key, false).await;
            return false;
        };
        let key = self.digest(&user, hash, &password);
        self.cached(&key) || self.verify(password, hash.clone(), key, true).await
    }
}

/// The user and password of a `Basic` authorization header (scheme in any case, RFC 7617). The
/// password is bytes: bcrypt takes any.
fn credentials(value: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let value = std::str::from_utf8(value.as_bytes()).ok()?.trim_matches(' ');
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(token.trim_start_matches(' ')).ok()?;
    let colon = raw.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(raw[..colon].to_vec()).ok()?;
    Some((user, raw[colon + 1..].to_vec()))
}

/// The middleware: the request passes with valid credentials, else 401 with a challenge.
pub(crate) async fn middleware(State(auth): State<Arc<BasicAuth>>, request: Request, next: Next) -> Response {
    if auth.check(request.headers().get(header::AUTHORIZATION)).await {
        next.run(request).await
    } else {
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic")], "Unauthorized\n").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::Router;
    use tower::ServiceExt;

    fn app(auth: Arc<BasicAuth>) -> Router {
        Router::new().route("/", axum::routing::get(|| async { "ok" })).layer(axum::middleware::from_fn_with_state(auth, middleware))
    }

    fn basic(scheme: &str, cred: &str) -> String {
        format!("{scheme} {}", base64::engine::general_purpose::STANDARD.encode(cred))
    }

    async fn status(app: &Router, authorization: Option<&str>) -> StatusCode {
        let mut req = Request::get("/");
        if let Some(v) = authorization {
            req = req.header(header::AUTHORIZATION, v);
        }
        app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap().status()
    }

    fn users() -> Arc<BasicAuth> {
        Arc::new(BasicAuth::new(BTreeMap::from([("prom".to_string(), bcrypt::hash("secret", 4).unwrap())])))
    }

    #[tokio::test]
    async fn checks_bcrypt() {
        let app = app(users());
        assert_eq!(status(&app, Some(&basic("Basic", "prom:secret"))).await, StatusCode::OK);
        assert_eq!(status(&app, Some(&basic("Basic", "prom:wrong"))).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&app, None).await, StatusCode::UNAUTHORIZED);
    }

    /// RFC 7235 §2.1: the scheme name is case-insensitive.
    #[tokio::test]
    async fn scheme_is_case_insensitive() {
        let app = app(users());
        for scheme in ["basic", "BASIC", "bAsIc"] {
            assert_eq!(status(&app, Some(&basic(scheme, "prom:secret"))).await, StatusCode::OK, "{scheme}");
        }
    }

    #[test]
    fn parses_credentials() {
        struct Case {
            header: &'static str,
            expected: Option<(&'static str, &'static str)>,
        }
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let cases = [
            Case { header: "Basic cHJvbTpzZWNyZXQ=", expected: Some(("prom", "secret")) },
            Case { header: "  basic   cHJvbTpzZWNyZXQ=  ", expected: Some(("prom", "secret")) },
            Case { header: "Bearer cHJvbTpzZWNyZXQ=", expected: None },
            Case { header: "Basicx cHJvbTpzZWNyZXQ=", expected: None },
            Case { header: "Basic", expected: None },
            Case { header: "Basic !!!", expected: None },
            Case { header: "Basic bm9jb2xvbg==", expected: None }, // "nocolon"
        ];
        for case in cases {
            let got = credentials(&HeaderValue::from_str(case.header).unwrap());
            let want = case.expected.map(|(u, p)| (u.to_string(), p.as_bytes().to_vec()));
            assert_eq!(got, want, "{:?}", case.header);
        }
        // The password may hold colons; the user ends at the first one.
        let got = credentials(&HeaderValue::from_str(&format!("Basic {}", b64("a:b:c"))).unwrap());
        assert_eq!(got, Some(("a".to_string(), b"b:c".to_vec())));
    }

    /// A good pair runs bcrypt once; later requests with it hit the cache.
    #[tokio::test]
    async fn verified_credentials_are_cached() {
        let auth = users();
        let app = app(auth.clone());
        for _ in 0..3 {
            assert_eq!(status(&app, Some(&basic("Basic", "prom:secret"))).await, StatusCode::OK);
        }
        assert_eq!(auth.bcrypt_calls(), 1);
    }

    /// Wrong passwords are never cached as good: each one is verified, and each is refused,
    /// also after the right one was cached.
    #[tokio::test]
    async fn wrong_credentials_are_never_cached_as_good() {
        let auth = users();
        let app = app(auth.clone());
        assert_eq!(status(&app, Some(&basic("Basic", "prom:wrong"))).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&app, Some(&basic("Basic", "prom:wrong"))).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&app, Some(&basic("Basic", "prom:secret"))).await, StatusCode::OK);
        for wrong in ["prom:wrong", "prom:secret ", "prom:secre", "prom:"] {
            assert_eq!(status(&app, Some(&basic("Basic", wrong))).await, StatusCode::UNAUTHORIZED, "{wrong}");
        }
        assert_eq!(auth.bcrypt_calls(), 7);
    }

    /// An unknown user costs the same bcrypt work as a known one: no timing oracle for names.
    #[tokio::test]
    async fn unknown_users_take_the_bcrypt_path() {
        let auth = users();
        let app = app(auth.clone());
        assert_eq!(status(&app, Some(&basic("Basic", "nobody:secret"))).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&app, Some(&basic("Basic", "nobody:secret"))).await, StatusCode::UNAUTHORIZED);
        assert_eq!(auth.bcrypt_calls(), 2);
    }

    /// The dummy hash is the costliest configured one.
    #[test]
    fn dummy_has_the_highest_cost() {
        let users = BTreeMap::from([("a".to_string(), bcrypt::hash("x", 5).unwrap()), ("b".to_string(), bcrypt::hash("y", 4).unwrap())]);
        let auth = BasicAuth::new(users.clone());
        assert_eq!(auth.dummy, users["a"]);
    }

    /// The cache stays bounded, evicting the pair used least recently.
    #[tokio::test]
    async fn cache_is_bounded() {
        let auth = users();
        for i in 0..CACHE_CAPACITY + 10 {
            auth.remember(auth.digest("u", "h", format!("p{i}").as_bytes()));
        }
        assert_eq!(auth.cache.lock().unwrap().len(), CACHE_CAPACITY);
        assert!(!auth.cached(&auth.digest("u", "h", b"p0")));
        assert!(auth.cached(&auth.digest("u", "h", format!("p{}", CACHE_CAPACITY + 9).as_bytes())));
    }
}
