//! W3C trace context (`traceparent`) carried in gRPC metadata, so one request can be
//! followed across services in the logs. The server layer reads or starts a context
//! and scopes the handler in it; clients copy it into their outgoing calls.

use std::fmt::Write;

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// The trace a request belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits: the span that made the call.
    pub parent_span_id: String,
}

fn random_hex(bytes: usize) -> String {
    let mut s = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        let _ = write!(s, "{:02x}", rand::random::<u8>());
    }
    s
}

impl TraceContext {
    /// A new trace.
    pub fn start() -> Self {
        Self { trace_id: random_hex(16), parent_span_id: random_hex(8) }
    }

    /// Parses `00-<trace id>-<span id>-<flags>`; `None` if malformed.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, _flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if version != "00" || !hex(trace, 32) || !hex(span, 16) || trace.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(Self { trace_id: trace.to_ascii_lowercase(), parent_span_id: span.to_ascii_lowercase() })
    }

    /// The `traceparent` value for a call made from within this trace (a new span id).
    pub fn child_header(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, random_hex(8))
    }

    /// The context of the request being handled, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `fut` with `self` as the current context.
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(h).unwrap();
        assert_eq!(ctx.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(TraceContext::parse("garbage").is_none());
        assert!(TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        let child = TraceContext::parse(&ctx.child_header()).unwrap();
        assert_eq!(child.trace_id, ctx.trace_id);
    }

    #[tokio::test]
    async fn scoped_context_is_current() {
        assert!(TraceContext::current().is_none());
        let ctx = TraceContext::start();
        let seen = ctx.clone().scope(async { TraceContext::current() }).await;
        assert_eq!(seen, Some(ctx));
    }
}
