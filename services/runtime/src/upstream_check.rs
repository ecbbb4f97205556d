//! Whether the services a service calls accept its token. A wrong upstream token
//! otherwise shows only as every call through the service failing, with the caller
//! told to check *their own* token; a service that knows its upstream refuses it says
//! so in its log, in its health (NOT_SERVING while it lasts), and in the errors of
//! the calls that needed the upstream.

use std::time::Duration;

use tonic::Code;

use crate::client::AuthedChannel;

/// The method a credential check asks for: no service has it.
pub const PROBE_PATH: &str = "/muster.runtime.v1.CredentialsProbe/Check";

/// Default time between checks when the config says 0.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// One upstream to check.
#[derive(Clone)]
pub struct UpstreamCheck {
    /// The upstream service (`policy`).
    pub upstream: &'static str,
    /// This service (`membership`).
    pub caller: &'static str,
    /// A channel presenting this service's token.
    pub channel: AuthedChannel,
    /// How often to check.
    pub every: Duration,
}

impl std::fmt::Debug for UpstreamCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamCheck").field("upstream", &self.upstream).field("caller", &self.caller).finish()
    }
}

/// What one check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// The upstream accepts the token.
    Accepted,
    /// The upstream refuses the token: a configuration error, named for the operator.
    Refused(String),
    /// The upstream did not answer (down, or starting): not a credentials problem.
    Unknown(String),
}

/// The sentence for an upstream that refuses `caller`'s token, naming where it is set.
pub fn refused_message(upstream: &str, caller: &str) -> String {
    format!("{upstream} refused {caller}'s token (check [{upstream}] token in {caller}'s config)")
}

/// Whether `code` from an upstream means it refused our credentials.
pub fn is_refusal(code: Code) -> bool {
    matches!(code, Code::Unauthenticated | Code::PermissionDenied)
}

/// Asks the upstream about a method no service has: the auth layer answers before
/// routing, so UNAUTHENTICATED means a refused token and UNIMPLEMENTED an accepted
/// one. Nothing runs, nothing is written, on any service.
pub async fn check(c: &UpstreamCheck) -> Credentials {
    let mut grpc = tonic::client::Grpc::new(c.channel.clone());
    if let Err(e) = grpc.ready().await {
        return Credentials::Unknown(e.to_string());
    }
    let path = http::uri::PathAndQuery::from_static(PROBE_PATH);
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.unary(tonic::Request::new(()), path, codec).await {
        Ok(_) => Credentials::Accepted,
        Err(s) if s.code() == Code::Unimplemented => Credentials::Accepted,
        Err(s) if is_refusal(s.code()) => Credentials::Refused(refused_message(c.upstream, c.caller)),
        Err(s) => Credentials::Unknown(format!("{}: {}", c.upstream, s.message())),
    }
}

/// The state of every check together: the refusals, if any, in one sentence.
pub fn refusals(found: &[Credentials]) -> Option<String> {
    let refused: Vec<&str> = found
        .iter()
        .filter_map(|f| match f {
            Credentials::Refused(m) => Some(m.as_str()),
            _ => None,
        })
        .collect();
    (!refused.is_empty()).then(|| refused.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_setting_to_fix() {
        assert_eq!(
            refused_message("policy", "membership"),
            "policy refused membership's token (check [policy] token in membership's config)"
        );
    }

    #[test]
    fn only_refusals_count_and_all_are_named() {
        let a = Credentials::Refused("a".into());
        let b = Credentials::Refused("b".into());
        assert_eq!(refusals(&[Credentials::Accepted, Credentials::Unknown("down".into())]), None);
        assert_eq!(refusals(&[a.clone(), Credentials::Accepted, b]), Some("a; b".into()));
        assert_eq!(refusals(&[a]), Some("a".into()));
        assert!(is_refusal(Code::Unauthenticated) && is_refusal(Code::PermissionDenied));
        assert!(!is_refusal(Code::Unavailable) && !is_refusal(Code::InvalidArgument));
    }
}
