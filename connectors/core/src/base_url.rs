//! Base URLs of vendor APIs (`graph_url`, `authority`, Okta's `org_url`,
//! Google's `api_url`), under one rule for every connector: **a base URL's
//! path is kept**. API paths are appended to it, never put in its place, so
//! `https://proxy.example/graph` + `/v1.0/users` is
//! `https://proxy.example/graph/v1.0/users`. (`Url::join` with an absolute
//! path would drop `/graph`: a national-cloud gateway or a proxy under a
//! path would then be bypassed.)

use std::fmt;

use reqwest::Url;

use crate::error::ConnectorError;

/// A configured base URL: http or https, with a host, no query or fragment.
#[derive(Clone, PartialEq, Eq)]
pub struct BaseUrl {
    url: Url,
}

impl BaseUrl {
    /// Parses the value of config field `field` (named in the error).
    pub fn parse(field: &str, text: &str) -> Result<Self, ConnectorError> {
        let url = Url::parse(text.trim()).map_err(|e| ConnectorError::Config(format!("{field} {text:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || url.cannot_be_a_base() {
            return Err(ConnectorError::Config(format!("{field} {text:?} is not an http(s) base url")));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ConnectorError::Config(format!("{field} {text:?} must not carry a query or a fragment")));
        }
        Ok(Self { url })
    }

    /// `path` (`/v1.0/users/{id}`, `/` separated, the leading `/` optional)
    /// appended to the base's path. Each segment is percent-encoded and `.`
    /// and `..` are dropped, so an id can never add a query or climb out of
    /// the base's path.
    pub fn join(&self, path: &str) -> Url {
        self.join_segments(path.split('/'))
    }

    /// These segments appended to the base's path, each percent-encoded.
    pub fn join_segments<'a, I>(&self, segments: I) -> Url
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut url = self.url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments.into_iter().filter(|s| !matches!(*s, "" | "." | "..")));
        }
        url
    }

    /// True when `url` is on the base's origin (scheme, host and port): the
    /// only place a bearer token may be sent.
    pub fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.url.origin()
    }

    /// `path` resolved against the base's origin only: for a path the API
    /// itself returned (a paging link kept in a cursor), which already holds
    /// the base's path.
    pub fn on_origin(&self, path: &str) -> Result<Url, ConnectorError> {
        let url = self.url.join(path).map_err(|e| ConnectorError::Protocol(format!("link {path:?}: {e}")))?;
        if self.same_origin(&url) {
            Ok(url)
        } else {
            Err(ConnectorError::Protocol("a stored link points to another origin".into()))
        }
    }

    pub fn as_url(&self) -> &Url {
        &self.url
    }

    /// The base without a trailing `/` (`https://proxy.example/graph`).
    pub fn as_str(&self) -> &str {
        self.url.as_str().trim_end_matches('/')
    }

    pub fn host(&self) -> Option<&str> {
        self.url.host_str()
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BaseUrl({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(text: &str) -> BaseUrl {
        BaseUrl::parse("graph_url", text).unwrap()
    }

    #[test]
    fn the_path_of_a_base_is_kept() {
        assert_eq!(
            base("https://proxy.example/graph").join("/v1.0/users").as_str(),
            "https://proxy.example/graph/v1.0/users"
        );
        assert_eq!(
            base("https://proxy.example/graph/").join("/v1.0/users").as_str(),
            "https://proxy.example/graph/v1.0/users"
        );
        assert_eq!(
            base("https://graph.microsoft.com").join("/v1.0/users").as_str(),
            "https://graph.microsoft.com/v1.0/users"
        );
        assert_eq!(
            base("https://graph.microsoft.com/").join("v1.0/$batch").as_str(),
            "https://graph.microsoft.com/v1.0/$batch"
        );
        assert_eq!(
            base("https://h.example/a/b").join_segments(["admin", "directory", "v1", "groups", "a@b.c"]).as_str(),
            "https://h.example/a/b/admin/directory/v1/groups/a@b.c"
        );
        assert_eq!(base("https://proxy.example/graph/").to_string(), "https://proxy.example/graph");
    }

    #[test]
    fn segments_cannot_add_a_query_or_climb_out() {
        let url = base("https://h.example/api").join("/v1.0/users/x?y#z");
        assert_eq!(url.query(), None);
        assert_eq!(url.fragment(), None);
        assert!(url.path().starts_with("/api/v1.0/users/"), "{url}");
        let url = base("https://h.example/api").join("/v1.0/../../../etc");
        assert_eq!(url.path(), "/api/v1.0/etc");
    }

    #[test]
    fn stored_links_resolve_on_the_origin_only() {
        let b = base("https://proxy.example/okta");
        let url = b.on_origin("/okta/api/v1/logs?after=1").unwrap();
        assert_eq!(url.as_str(), "https://proxy.example/okta/api/v1/logs?after=1");
        assert!(b.on_origin("https://elsewhere.example/okta/api/v1/logs").is_err());
        assert!(b.same_origin(&Url::parse("https://proxy.example/other").unwrap()));
        assert!(!b.same_origin(&Url::parse("http://proxy.example/okta").unwrap()));
    }

    #[test]
    fn only_http_bases_without_query() {
        for bad in ["ftp://h.example", "mailto:a@b.c", "https://h.example/?a=1", "https://h.example/#x", "not a url"] {
            let err = BaseUrl::parse("org_url", bad).unwrap_err();
            assert!(matches!(err, ConnectorError::Config(ref m) if m.contains("org_url")), "{bad}: {err}");
        }
    }
}
