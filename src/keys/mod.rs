//! Issuer keys: discovery, bounded fetches and a per-issuer cache that refreshes on expiry and
//! on an unknown `kid`, single-flight and at most once per cooldown.
//!
//! The hot path takes a read lock and clones an `Arc`; only a miss waits on the refresh mutex,
//! which re-checks after acquiring it so a flood of misses makes at most one fetch.

mod fetch;
pub mod jwks;

pub use fetch::FetchError;
pub use jwks::{KeyKind, KeyMatch, KeySet, VerificationKey, jws_algorithm};

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::{Client, Url};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::{IssuerSettings, KeyFetchSettings};

/// A key set as fetched, handed to the archive before it is used.
#[derive(Debug, Clone)]
pub struct FetchedKeySet {
    /// The issuer it belongs to.
    pub issuer: String,
    /// SHA-256 of the document.
    pub digest: [u8; 32],
    /// The document as fetched.
    pub document: String,
    /// The `kid`s it holds (usable keys only).
    pub kids: Vec<String>,
}

/// Where fetched key sets are kept (the audit store), so every acceptance can be re-verified
/// offline against the exact keys that verified it.
pub trait KeyArchive: Send + Sync + std::fmt::Debug {
    /// Durably records a fetched set; returns once it is stored (errors are logged inside).
    fn archive(&self, set: FetchedKeySet) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Why no key could be produced for a token.
#[derive(Debug, thiserror::Error)]
pub enum KeyLookupError {
    /// The `kid` is not in a key set fetched after the token arrived: a definitive 400.
    #[error("{0}")]
    Unknown(String),
    /// The key exists but does not fit the token's algorithm.
    #[error("{0}")]
    Unsuitable(String),
    /// The key cannot be looked up now (cooldown running or issuer unreachable): a 503.
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Debug, Default)]
struct RefreshState {
    last_attempt: Option<Instant>,
    jwks_uri: Option<Url>,
    expires_at: Option<Instant>,
    last_error: Option<String>,
}

/// One issuer's cached key set.
#[derive(Debug)]
pub struct IssuerKeys {
    issuer: String,
    configured_jwks_uri: Option<Url>,
    /// The set and when it was last fetched successfully (its age bounds how long it is trusted).
    current: RwLock<Option<(Arc<KeySet>, Instant)>>,
    generation: AtomicU64,
    fetches: AtomicU64,
    refresh: Mutex<RefreshState>,
}

/// The keys of every configured issuer; no other issuer is ever contacted.
#[derive(Debug)]
pub struct KeyRegistry {
    issuers: HashMap<String, Arc<IssuerKeys>>,
    client: Client,
    settings: KeyFetchSettings,
    archive: Option<Arc<dyn KeyArchive>>,
}

impl KeyRegistry {
    /// Builds the registry for the configured issuers (no fetch yet).
    pub fn new(
        issuers: &[IssuerSettings],
        settings: KeyFetchSettings,
    ) -> Result<Self, reqwest::Error> {
        let client = fetch::client(&settings)?;
        let issuers = issuers
            .iter()
            .map(|s| {
                let keys = IssuerKeys {
                    issuer: s.issuer.clone(),
                    configured_jwks_uri: s.jwks_uri.clone(),
                    current: RwLock::new(None),
                    generation: AtomicU64::new(0),
                    fetches: AtomicU64::new(0),
                    refresh: Mutex::new(RefreshState::default()),
                };
                (s.issuer.clone(), Arc::new(keys))
            })
            .collect();
        Ok(Self {
            issuers,
            client,
            settings,
            archive: None,
        })
    }

    /// For fuzzing and tests: a registry whose issuers already hold these parsed key sets, every
    /// issuer counted as fetched just now, so no fetch runs within the cooldown (a `kid` it lacks
    /// is `keys_unavailable`, never a network request). Sets of unconfigured issuers are ignored.
    pub fn preloaded(
        issuers: &[IssuerSettings],
        settings: KeyFetchSettings,
        sets: impl IntoIterator<Item = (String, KeySet)>,
    ) -> Result<Self, reqwest::Error> {
        let mut registry = Self::new(issuers, settings)?;
        let mut sets: HashMap<String, KeySet> = sets.into_iter().collect();
        // Freshly built: each Arc has one owner, so `get_mut` reaches every issuer's cache.
        for (iss, keys) in registry.issuers.iter_mut() {
            let Some(keys) = Arc::get_mut(keys) else {
                continue;
            };
            keys.refresh.get_mut().last_attempt = Some(Instant::now());
            if let (Some(set), Ok(current)) = (sets.remove(iss), keys.current.get_mut()) {
                *current = Some((Arc::new(set), Instant::now()));
                keys.generation.fetch_add(1, Ordering::Release);
            }
        }
        Ok(registry)
    }

    /// Archives every fetched key set before it is used.
    pub fn with_archive(mut self, archive: Arc<dyn KeyArchive>) -> Self {
        self.archive = Some(archive);
        self
    }

    /// The cache of one configured issuer.
    pub fn issuer(&self, iss: &str) -> Option<&Arc<IssuerKeys>> {
        self.issuers.get(iss)
    }

    /// Whether every issuer has a key set (readiness).
    pub fn all_loaded(&self) -> bool {
        self.issuers.values().all(|k| k.current().is_some())
    }

    /// Whether every issuer has a key set younger than the max key age (readiness).
    pub fn all_usable(&self) -> bool {
        let max_age = self.settings.max_key_age;
        self.issuers.values().all(|k| k.usable(max_age).is_some())
    }

    /// Each issuer's key-set age since its last successful fetch (`None`: never fetched),
    /// sorted by issuer, for the age gauge.
    pub fn key_set_ages(&self) -> Vec<(&str, Option<Duration>)> {
        let mut ages: Vec<_> = self
            .issuers
            .values()
            .map(|k| (k.issuer.as_str(), k.age()))
            .collect();
        ages.sort_by(|a, b| a.0.cmp(b.0));
        ages
    }

    /// Total key-set fetch attempts, for metrics.
    pub fn fetch_count(&self) -> u64 {
        self.issuers
            .values()
            .map(|k| k.fetches.load(Ordering::Relaxed))
            .sum()
    }

    /// Finds the verification keys for a token of `iss` with `kid` and `alg`, refreshing the
    /// cached set when the `kid` is unknown and the cooldown allows.
    pub async fn lookup(
        &self,
        keys: &IssuerKeys,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<DecodingKey>, KeyLookupError> {
        let max_age = self.settings.max_key_age;
        let seen_generation = keys.generation.load(Ordering::Acquire);
        if let Some(found) = keys.try_select(kid, alg, max_age)? {
            return Ok(found);
        }
        let mut state = keys.refresh.lock().await;
        let miss = || {
            KeyLookupError::Unknown(match kid {
                Some(kid) => format!("no key {kid:?} in the issuer's current key set"),
                None => format!("no {alg:?} key in the issuer's current key set"),
            })
        };
        if keys.generation.load(Ordering::Acquire) != seen_generation {
            // A fetch finished while we waited: its answer is fresh enough.
            return keys.try_select(kid, alg, max_age)?.ok_or_else(miss);
        }
        let stale = keys.stale_note(max_age);
        let cooldown = self.settings.refresh_cooldown;
        if state.last_attempt.is_some_and(|t| t.elapsed() < cooldown) {
            let last = match &state.last_error {
                Some(e) => format!("; last fetch failed: {e}"),
                None => String::new(),
            };
            return Err(KeyLookupError::Unavailable(match stale {
                Some(stale) => format!("{stale}{last}"),
                None => format!(
                    "key {:?} is not cached and the key set was fetched less than {}s ago{last}",
                    kid.unwrap_or("(none)"),
                    cooldown.as_secs()
                ),
            }));
        }
        match self.fetch_locked(keys, &mut state).await {
            Ok(()) => keys.try_select(kid, alg, max_age)?.ok_or_else(miss),
            Err(e) => Err(KeyLookupError::Unavailable(match stale {
                Some(stale) => format!("{stale}; refetch failed: {e}"),
                None => format!("key set unavailable: {e}"),
            })),
        }
    }

    /// Fetches one issuer's set now unless another fetch ran within the cooldown.
    pub async fn refresh(&self, keys: &IssuerKeys) -> Result<(), FetchError> {
        let mut state = keys.refresh.lock().await;
        if state
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.settings.refresh_cooldown)
        {
            return Ok(());
        }
        self.fetch_locked(keys, &mut state).await
    }

    async fn fetch_locked(
        &self,
        keys: &IssuerKeys,
        state: &mut RefreshState,
    ) -> Result<(), FetchError> {
        let result = self.fetch_once(keys, state).await;
        state.last_error = result.as_ref().err().map(ToString::to_string);
        result
    }

    async fn fetch_once(
        &self,
        keys: &IssuerKeys,
        state: &mut RefreshState,
    ) -> Result<(), FetchError> {
        state.last_attempt = Some(Instant::now());
        keys.fetches.fetch_add(1, Ordering::Relaxed);
        let uri = match (&keys.configured_jwks_uri, &state.jwks_uri) {
            (Some(u), _) | (None, Some(u)) => u.clone(),
            (None, None) => {
                let u = fetch::discover(&self.client, &keys.issuer, &self.settings).await?;
                state.jwks_uri = Some(u.clone());
                u
            }
        };
        let fetched = match fetch::get(&self.client, &uri, &self.settings).await {
            Ok(f) => f,
            Err(e) => {
                // The key-set location may have moved: ask discovery again next time.
                state.jwks_uri = None;
                return Err(e);
            }
        };
        let (set, skipped) = KeySet::parse(&fetched.body).map_err(|e| FetchError::Discovery {
            url: uri.to_string(),
            message: e.to_string(),
        })?;
        for s in skipped {
            tracing::warn!(issuer = %keys.issuer, "ignoring unusable key: {s}");
        }
        if let Some(archive) = &self.archive {
            let fetched_set = FetchedKeySet {
                issuer: keys.issuer.clone(),
                digest: set.digest,
                document: String::from_utf8_lossy(&fetched.body).into_owned(),
                kids: set.keys.iter().filter_map(|k| k.kid.clone()).collect(),
            };
            archive.archive(fetched_set).await;
        }
        let changed = keys.current().is_none_or(|old| old.digest != set.digest);
        if changed {
            tracing::info!(issuer = %keys.issuer, keys = set.keys.len(), digest = %set.digest_hex(), "key set loaded");
        }
        // Refetch by half the max key age at the latest, so a reachable issuer's set never
        // ages out between two scheduled refreshes.
        let ttl = fetched.ttl.min(self.settings.max_key_age / 2);
        let now = Instant::now();
        state.expires_at = Some(now + ttl);
        if let Ok(mut cur) = keys.current.write() {
            *cur = Some((Arc::new(set), now));
        }
        keys.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Keeps every issuer's set fresh: loads eagerly, retries with back-off while no set is
    /// loaded, and refreshes when the cached set's lifetime ends. Runs until aborted.
    pub async fn maintain(self: Arc<Self>) {
        // A JoinSet: aborting this task aborts every per-issuer loop with it.
        let mut tasks = tokio::task::JoinSet::new();
        for keys in self.issuers.values() {
            let registry = Arc::clone(&self);
            let keys = Arc::clone(keys);
            tasks.spawn(async move { registry.maintain_one(&keys).await });
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn maintain_one(&self, keys: &IssuerKeys) {
        let mut backoff = Duration::from_millis(500);
        loop {
            if let Err(e) = self.refresh(keys).await {
                tracing::warn!(issuer = %keys.issuer, "key set fetch failed: {e}");
            }
            let wait = {
                let state = keys.refresh.lock().await;
                let cooldown_left = state
                    .last_attempt
                    .map(|t| self.settings.refresh_cooldown.saturating_sub(t.elapsed()))
                    .unwrap_or_default();
                match (keys.current().is_some(), state.expires_at) {
                    (true, Some(at)) if at > Instant::now() => at - Instant::now(),
                    (true, _) => cooldown_left.max(Duration::from_secs(1)),
                    (false, _) => {
                        backoff = (backoff * 2)
                            .min(self.settings.refresh_cooldown.max(Duration::from_secs(1)));
                        backoff.max(cooldown_left)
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl IssuerKeys {
    /// The cached set, if any.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current
            .read()
            .ok()
            .and_then(|g| g.as_ref().map(|(set, _)| Arc::clone(set)))
    }

    /// Time since the last successful fetch; `None` before the first.
    pub fn age(&self) -> Option<Duration> {
        self.current
            .read()
            .ok()
            .and_then(|g| g.as_ref().map(|(_, at)| at.elapsed()))
    }

    /// The cached set if it is younger than `max_age`: an older one is no longer trusted.
    pub fn usable(&self, max_age: Duration) -> Option<Arc<KeySet>> {
        let guard = self.current.read().ok()?;
        let (set, at) = guard.as_ref()?;
        (at.elapsed() < max_age).then(|| Arc::clone(set))
    }

    /// Why the cached set is refused, when it exists but has outlived `max_age`.
    fn stale_note(&self, max_age: Duration) -> Option<String> {
        let age = self.age()?;
        (age >= max_age).then(|| {
            format!(
                "the key set was last fetched {}s ago, beyond the {}s max key age",
                age.as_secs(),
                max_age.as_secs()
            )
        })
    }

    /// Fetch attempts so far.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn try_select(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        max_age: Duration,
    ) -> Result<Option<Vec<DecodingKey>>, KeyLookupError> {
        let Some(set) = self.usable(max_age) else {
            return Ok(None);
        };
        match set.select(kid, alg) {
            KeyMatch::Found(keys) => Ok(Some(keys.into_iter().cloned().collect())),
            KeyMatch::Unsuitable(why) => Err(KeyLookupError::Unsuitable(why)),
            KeyMatch::NotFound => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: &str = r#"{"keys":[{"kty":"EC","kid":"e1","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

    fn issuer(iss: &str) -> IssuerSettings {
        IssuerSettings {
            issuer: iss.into(),
            audiences: vec!["app".into()],
            algorithms: vec![Algorithm::ES256],
            // Loopback, nothing listens: a fetch that slipped through could reach nothing else.
            jwks_uri: "http://127.0.0.1:9/jwks".parse().ok(),
            client_secret: None,
            require_exp: true,
            leeway_secs: 60,
            max_token_age_secs: 300,
        }
    }

    #[tokio::test]
    async fn preloaded_registry_serves_its_sets_and_never_fetches() {
        let (set, _) = KeySet::parse(SET.as_bytes()).expect("set");
        let digest = set.digest;
        let issuers = [issuer("https://a.example/"), issuer("https://b.example/")];
        let registry = KeyRegistry::preloaded(
            &issuers,
            KeyFetchSettings::default(),
            [
                ("https://a.example/".to_owned(), set.clone()),
                ("https://unconfigured.example/".to_owned(), set),
            ],
        )
        .expect("registry");
        let a = registry.issuer("https://a.example/").expect("a");
        let b = registry.issuer("https://b.example/").expect("b");
        assert_eq!(a.current().map(|s| s.digest), Some(digest));
        assert!(b.current().is_none() && !registry.all_loaded());
        assert!(registry.issuer("https://unconfigured.example/").is_none());

        let found = registry.lookup(a, Some("e1"), Algorithm::ES256).await;
        assert_eq!(found.expect("e1").len(), 1);
        for (keys, kid) in [(a, Some("nope")), (b, None)] {
            let miss = registry.lookup(keys, kid, Algorithm::ES256).await;
            assert!(
                matches!(miss, Err(KeyLookupError::Unavailable(_))),
                "{miss:?}"
            );
        }
        assert_eq!(
            registry.fetch_count(),
            0,
            "counted as fetched: no fetch ran"
        );
    }
}
