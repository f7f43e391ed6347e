//! Which headers cross the proxy in each direction, and the per-provider
//! rewrite of the client's `Authorization: Bearer` credential.

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the ones the HTTP client sets
/// itself; none of them is forwarded in either direction.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// How the provider wants the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// `Authorization: Bearer <key>` as the client sent it.
    Bearer,
    /// `x-api-key: <key>` (Anthropic), with a default `anthropic-version`.
    XApiKey,
    /// `api-key: <key>` (Azure OpenAI).
    ApiKey,
}

impl AuthStyle {
    /// Parse the style name used by the Python provider registry.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "bearer" => Some(AuthStyle::Bearer),
            "x-api-key" => Some(AuthStyle::XApiKey),
            "api-key" => Some(AuthStyle::ApiKey),
            _ => None,
        }
    }
}

/// The `anthropic-version` sent when the client named none.
const ANTHROPIC_VERSION: &str = "2023-06-01";

fn is_hop_by_hop(name: &str, listed_in_connection: &[String]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || listed_in_connection
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
}

/// Header names a `Connection` header declares hop-by-hop.
fn connection_listed<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    headers
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .filter(|t| !t.is_empty())
        .collect()
}

/// Headers to send upstream: the client's, minus hop-by-hop, `X-Lectr-*`
/// and `accept-encoding` (the gateway reads usage from the body, so it asks
/// for it uncompressed), with the credential rewritten for `style`.
pub fn upstream_request_headers(
    client: &[(String, String)],
    style: AuthStyle,
) -> Vec<(String, String)> {
    let listed = connection_listed(client.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let mut out = Vec::with_capacity(client.len() + 2);
    let mut saw_anthropic_version = false;
    for (name, value) in client {
        if is_hop_by_hop(name, &listed)
            || name.len() >= 8
                && name
                    .get(..8)
                    .is_some_and(|p| p.eq_ignore_ascii_case("x-lectr-"))
            || name.eq_ignore_ascii_case("accept-encoding")
        {
            continue;
        }
        if name.eq_ignore_ascii_case("authorization") {
            match style {
                AuthStyle::Bearer => out.push((name.clone(), value.clone())),
                AuthStyle::XApiKey => {
                    out.push(("x-api-key".to_owned(), bearer_token(value).to_owned()))
                }
                AuthStyle::ApiKey => {
                    out.push(("api-key".to_owned(), bearer_token(value).to_owned()))
                }
            }
            continue;
        }
        if name.eq_ignore_ascii_case("anthropic-version") {
            saw_anthropic_version = true;
        }
        out.push((name.clone(), value.clone()));
    }
    if style == AuthStyle::XApiKey && !saw_anthropic_version {
        out.push(("anthropic-version".to_owned(), ANTHROPIC_VERSION.to_owned()));
    }
    out.push(("accept-encoding".to_owned(), "identity".to_owned()));
    out
}

/// The credential inside `Bearer <token>`; any other scheme is passed whole.
fn bearer_token(value: &str) -> &str {
    let v = value.trim();
    match v.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => v.get(7..).unwrap_or("").trim(),
        _ => v,
    }
}

/// Response headers to give the client: the provider's, minus hop-by-hop.
pub fn client_response_headers(upstream: &[(&str, &[u8])]) -> Vec<(String, String)> {
    let listed = connection_listed(
        upstream
            .iter()
            .filter_map(|(n, v)| std::str::from_utf8(v).ok().map(|v| (*n, v))),
    );
    upstream
        .iter()
        .filter(|(n, _)| !is_hop_by_hop(n, &listed))
        // Header values are visible ASCII in practice; a non-UTF-8 value is
        // carried through lossily rather than failing the response.
        .map(|(n, v)| ((*n).to_owned(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
pub(crate) mod tests {
    use super::*;

    /// Owned header pairs from literals (shared with the h1 tests).
    pub(crate) fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn strips_lectr_and_hop_headers() {
        let out = upstream_request_headers(
            &h(&[
                ("X-Lectr-Key", "lc_key_x"),
                ("x-lectr-feature", "chat"),
                ("Connection", "keep-alive, X-Custom-Hop"),
                ("x-custom-hop", "1"),
                ("Host", "gw"),
                ("Content-Length", "10"),
                ("Accept-Encoding", "gzip"),
                ("Authorization", "Bearer sk-1"),
                ("content-type", "application/json"),
            ]),
            AuthStyle::Bearer,
        );
        assert_eq!(
            out,
            h(&[
                ("Authorization", "Bearer sk-1"),
                ("content-type", "application/json"),
                ("accept-encoding", "identity")
            ])
        );
    }

    #[test]
    fn rewrites_auth_for_anthropic_and_azure() {
        let a = upstream_request_headers(
            &h(&[("authorization", "Bearer sk-ant-1")]),
            AuthStyle::XApiKey,
        );
        assert_eq!(
            a,
            h(&[
                ("x-api-key", "sk-ant-1"),
                ("anthropic-version", "2023-06-01"),
                ("accept-encoding", "identity")
            ])
        );
        let a = upstream_request_headers(
            &h(&[
                ("authorization", "Bearer k"),
                ("anthropic-version", "2024-01-01"),
            ]),
            AuthStyle::XApiKey,
        );
        assert_eq!(
            a[1],
            ("anthropic-version".to_owned(), "2024-01-01".to_owned())
        );
        let z = upstream_request_headers(&h(&[("Authorization", "bearer az")]), AuthStyle::ApiKey);
        assert_eq!(z[0], ("api-key".to_owned(), "az".to_owned()));
    }

    #[test]
    fn response_drops_hop_by_hop() {
        let up: Vec<(&str, &[u8])> = vec![
            ("content-type", b"application/json"),
            ("transfer-encoding", b"chunked"),
            ("connection", b"keep-alive"),
            ("x-request-id", b"abc"),
        ];
        let out = client_response_headers(&up);
        assert_eq!(
            out,
            h(&[
                ("content-type", "application/json"),
                ("x-request-id", "abc")
            ])
        );
    }
}
