//! Limits of the SCIM port, so that no caller can hold it: a bounded number of open
//! connections (more wait in the kernel's backlog), connections that go quiet are
//! closed, a request (its body included) must finish within a deadline, and each
//! bearer token has a request rate and a number of requests in flight. A token over
//! its share gets SCIM's `429` with `Retry-After` in whole seconds, which Okta and
//! Entra honour.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The SCIM port's limits (from `[http]`); a zero turns that limit off.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// A connection with nothing read or written for this long is closed.
    pub idle_timeout: Duration,
    /// A request, body included, must be answered within this.
    pub request_timeout: Duration,
    /// Requests per second per token (sustained).
    pub token_rate: f64,
    /// Requests a token may send at once above its rate.
    pub token_burst: f64,
    /// Requests of one token in flight at once.
    pub token_concurrency: usize,
}

/// A listener that holds at most `max_connections` open and closes idle ones.
pub struct LimitedListener {
    inner: TcpListener,
    permits: Option<Arc<Semaphore>>,
    idle: Option<Duration>,
}

impl LimitedListener {
    /// Wraps `inner` with `limits`.
    pub fn new(inner: TcpListener, limits: &Limits) -> Self {
        Self {
            inner,
            permits: (limits.max_connections > 0).then(|| Arc::new(Semaphore::new(limits.max_connections))),
            idle: (!limits.idle_timeout.is_zero()).then_some(limits.idle_timeout),
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // Wait for a free slot before accepting: the next connection stays in the
        // backlog instead of being accepted and starved.
        let permit = match &self.permits {
            Some(p) => p.clone().acquire_owned().await.ok(),
            None => None,
        };
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let deadline = self.idle.map(|d| Box::pin(tokio::time::sleep(d)));
                    return (LimitedIo { stream, _permit: permit, idle: self.idle, deadline }, addr);
                }
                // Out of descriptors and the like: pause rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "scim port: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection of [`LimitedListener`]: it frees its slot when dropped, and fails its
/// reads once nothing has moved for the idle timeout.
pub struct LimitedIo {
    stream: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
    idle: Option<Duration>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl LimitedIo {
    fn moved(&mut self) {
        if let (Some(d), Some(sleep)) = (self.idle, self.deadline.as_mut()) {
            sleep.as_mut().reset(tokio::time::Instant::now() + d);
        }
    }
}

impl AsyncRead for LimitedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let expired = match self.deadline.as_mut() {
                    Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if expired {
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle connection closed")))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A token's share: a token bucket and its requests in flight.
struct Share {
    tokens: f64,
    at: Instant,
    in_flight: Arc<Semaphore>,
}

/// Each token's rate and concurrency, keyed by a hash of the Authorization header (a
/// token itself is never kept).
#[derive(Clone)]
pub struct TokenLimits {
    limits: Limits,
    shares: Arc<Mutex<HashMap<[u8; 32], Share>>>,
}

/// Most tokens tracked at once: callers inventing tokens cannot grow the map without
/// bound (when full, shares idle for a minute go; failing that, new keys share one).
const MAX_TRACKED: usize = 10_000;

/// What the bucket says of one request.
#[derive(Debug, PartialEq)]
pub enum Admission {
    /// Go ahead.
    Admitted,
    /// Over the rate: retry after this many whole seconds.
    TooFast(u64),
}

/// Takes one request from a bucket of `tokens` last filled at `at` (pure: unit-tested).
pub fn take(tokens: &mut f64, at: &mut Instant, now: Instant, rate: f64, burst: f64) -> Admission {
    let elapsed = now.saturating_duration_since(*at).as_secs_f64();
    *tokens = (*tokens + elapsed * rate).min(burst);
    *at = now;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        Admission::Admitted
    } else {
        // Whole seconds, rounded up: Retry-After takes no fractions.
        Admission::TooFast((((1.0 - *tokens) / rate).ceil() as u64).max(1))
    }
}

impl TokenLimits {
    /// Per-token limits of `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits, shares: Arc::new(Mutex::new(HashMap::new())) }
    }

    fn admit(&self, key: [u8; 32]) -> Result<Option<OwnedSemaphorePermit>, u64> {
        let l = &self.limits;
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if shares.len() >= MAX_TRACKED && !shares.contains_key(&key) {
            shares.retain(|_, s| now.saturating_duration_since(s.at) < Duration::from_secs(60));
        }
        let key = if shares.len() >= MAX_TRACKED && !shares.contains_key(&key) { [0u8; 32] } else { key };
        let share = shares.entry(key).or_insert_with(|| Share {
            tokens: l.token_burst.max(1.0),
            at: now,
            in_flight: Arc::new(Semaphore::new(l.token_concurrency.max(1))),
        });
        if l.token_rate > 0.0
            && let Admission::TooFast(wait) =
                take(&mut share.tokens, &mut share.at, now, l.token_rate, l.token_burst.max(1.0))
        {
            return Err(wait);
        }
        if l.token_concurrency == 0 {
            return Ok(None);
        }
        share.in_flight.clone().try_acquire_owned().map(Some).map_err(|_| 1)
    }
}

fn scim_error(status: StatusCode, detail: &str, retry_after: Option<u64>) -> Response {
    let body = serde_json::json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.as_u16().to_string(),
        "detail": detail,
    });
    let mut r = (status, [(header::CONTENT_TYPE, muster_scim::SCIM_CONTENT_TYPE)], body.to_string()).into_response();
    if let Some(s) = retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Middleware: the token's share, then the request within its deadline.
pub async fn limit(State(limits): State<TokenLimits>, request: Request, next: Next) -> Response {
    // A load balancer's probe must not be starved by anonymous callers sharing its share.
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let key: [u8; 32] = {
        let auth = request.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes()).unwrap_or(b"");
        Sha256::digest(auth).into()
    };
    let _permit = match limits.admit(key) {
        Ok(p) => p,
        Err(wait) => {
            return scim_error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("too many requests for this token; retry after {wait} s"),
                Some(wait),
            );
        }
    };
    let deadline = limits.limits.request_timeout;
    if deadline.is_zero() {
        return next.run(request).await;
    }
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(r) => r,
        // Nothing half-done: a SCIM write is one transaction, which commits or not
        // (an answer that came too late is a lost answer, not a lost write).
        Err(_) => scim_error(
            StatusCode::REQUEST_TIMEOUT,
            &format!("the request was not completed within {} s", deadline.as_secs()),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_admits_its_burst_then_its_rate_and_says_when() {
        let t0 = Instant::now();
        let (mut tokens, mut at) = (3.0, t0);
        for _ in 0..3 {
            assert_eq!(take(&mut tokens, &mut at, t0, 1.0, 3.0), Admission::Admitted);
        }
        assert_eq!(take(&mut tokens, &mut at, t0, 1.0, 3.0), Admission::TooFast(1));
        // Half a token back after half a second: still a whole second to wait (rounded up).
        assert_eq!(take(&mut tokens, &mut at, t0 + Duration::from_millis(500), 1.0, 3.0), Admission::TooFast(1));
        assert_eq!(take(&mut tokens, &mut at, t0 + Duration::from_millis(1600), 1.0, 3.0), Admission::Admitted);
        // A slow rate waits longer, in whole seconds.
        let (mut tokens, mut at) = (0.0, t0);
        assert_eq!(take(&mut tokens, &mut at, t0, 0.2, 1.0), Admission::TooFast(5));
        // Idle time never fills more than the burst.
        let (mut tokens, mut at) = (0.0, t0);
        let _ = take(&mut tokens, &mut at, t0 + Duration::from_secs(3600), 10.0, 5.0);
        assert!(tokens <= 5.0);
    }

    #[test]
    fn invented_tokens_cannot_grow_the_map_without_bound() {
        let l = TokenLimits::new(Limits {
            max_connections: 0,
            idle_timeout: Duration::ZERO,
            request_timeout: Duration::ZERO,
            token_rate: 1000.0,
            token_burst: 1000.0,
            token_concurrency: 0,
        });
        for i in 0..(MAX_TRACKED + 50) {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            let _ = l.admit(key);
        }
        assert!(l.shares.lock().unwrap().len() <= MAX_TRACKED + 1);
    }
}
