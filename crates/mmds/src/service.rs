//! One VM's metadata service: the data store, the version (V1: GETs need no token; V2: they
//! need one), IMDS compatibility, the token authority, and the answer to each guest
//! request with Firecracker's status codes and messages.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::http::{ContentType, Request, Response};
use crate::store::{DataStore, OutputFormat, StoreError};
use crate::token::{TokenAuthority, TokenError, PATH_TO_TOKEN};

const TOKEN_HEADERS: [&str; 2] = ["X-metadata-token", "X-aws-ec2-metadata-token"];
const TTL_HEADERS: [&str; 2] = [
    "X-metadata-token-ttl-seconds",
    "X-aws-ec2-metadata-token-ttl-seconds",
];

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MmdsVersion {
    #[default]
    V1,
    V2,
}

#[derive(Debug)]
pub struct Mmds {
    store: DataStore,
    version: MmdsVersion,
    imds_compat: bool,
    tokens: TokenAuthority,
    origin: Instant,
}

impl Mmds {
    /// An empty V1 service whose store holds at most `size_limit` bytes.
    pub fn new(size_limit: usize) -> Result<Self, TokenError> {
        Ok(Self {
            store: DataStore::new(size_limit),
            version: MmdsVersion::V1,
            imds_compat: false,
            tokens: TokenAuthority::new()?,
            origin: Instant::now(),
        })
    }

    pub fn store(&self) -> &DataStore {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut DataStore {
        &mut self.store
    }

    pub fn version(&self) -> MmdsVersion {
        self.version
    }

    pub fn set_version(&mut self, version: MmdsVersion) {
        self.version = version;
    }

    pub fn set_imds_compat(&mut self, imds_compat: bool) {
        self.imds_compat = imds_compat;
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// The answer to one guest request.
    pub fn respond(&self, request: &Request) -> Response {
        self.respond_at(request, self.now())
    }

    /// [`Self::respond`] at time `now` (since the service was made).
    pub fn respond_at(&self, request: &Request, now: Duration) -> Response {
        if request.path.is_empty() {
            return Response::text(400, "Invalid URI.");
        }
        match request.method.as_str() {
            "GET" => self.get(request, now),
            "PUT" => self.put_token(request, now),
            _ => Response::text(405, "Not allowed HTTP method.")
                .with_header("Allow", "GET, PUT".into()),
        }
    }

    fn get(&self, request: &Request, now: Duration) -> Response {
        let token = TOKEN_HEADERS.iter().find_map(|h| request.header(h));
        if self.version == MmdsVersion::V2 {
            match token {
                None => return Response::text(401, "No MMDS token provided. Use `X-metadata-token` or `X-aws-ec2-metadata-token` header to specify the session token."),
                Some(t) if !self.tokens.is_valid(t, now) => {
                    return Response::text(401, "MMDS token not valid.")
                }
                Some(_) => {}
            }
        }
        let wants_json = !self.imds_compat
            && request
                .header("Accept")
                .is_some_and(|a| a.to_ascii_lowercase().contains("application/json"));
        let (format, content_type) = if wants_json {
            (OutputFormat::Json, ContentType::Json)
        } else {
            (OutputFormat::Imds, ContentType::Text)
        };
        match self.store.get(&request.path, format) {
            Ok(body) => Response::new(200, content_type, body),
            Err(StoreError::NotFound) => {
                Response::text(404, format!("Resource not found: {}.", request.path))
            }
            Err(e @ StoreError::UnsupportedValueType) => Response::text(501, e.to_string()),
            Err(e) => Response::text(400, e.to_string()),
        }
    }

    fn put_token(&self, request: &Request, now: Duration) -> Response {
        if request.header("X-Forwarded-For").is_some() {
            return Response::text(
                400,
                "Invalid header. Reason: Unsupported header name. Key: X-Forwarded-For",
            );
        }
        if normalized(&request.path) != PATH_TO_TOKEN {
            return Response::text(404, format!("Resource not found: {}.", request.path));
        }
        let Some((name, value)) = TTL_HEADERS
            .iter()
            .find_map(|h| request.header(h).map(|v| (*h, v)))
        else {
            return Response::text(400, "Token time to live value not found. Use `X-metadata-token-ttl-seconds` or `X-aws-ec2-metadata-token-ttl-seconds` header to specify the token's lifetime.");
        };
        let Ok(ttl) = value.parse::<u32>() else {
            return Response::text(
                400,
                format!("Invalid header. Reason: Invalid value. Key:{name}; Value:{value}"),
            );
        };
        match self.tokens.issue(ttl, now) {
            Ok(token) => Response::text(200, token).with_header(name, ttl.to_string()),
            Err(e) => Response::text(400, e.to_string()),
        }
    }
}

/// A path with repeated slashes collapsed.
fn normalized(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::http::parse_request;

    fn mmds(version: MmdsVersion) -> Mmds {
        let mut m = Mmds::new(crate::store::DEFAULT_SIZE_LIMIT).unwrap();
        m.set_version(version);
        m.store_mut()
            .put(json!({"latest": {"meta-data": {"instance-id": "i-1234"}}}))
            .unwrap();
        m
    }

    fn ask(m: &Mmds, text: &str, now: u64) -> Response {
        let req = parse_request(text.as_bytes()).unwrap().unwrap();
        m.respond_at(&req, Duration::from_secs(now))
    }

    #[test]
    fn v2_needs_a_token_that_has_not_expired() {
        let m = mmds(MmdsVersion::V2);
        let get = "GET /latest/meta-data/instance-id HTTP/1.1\r\n\r\n";
        assert_eq!(ask(&m, get, 0).status, 401);
        let token = ask(
            &m,
            "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 10\r\n\r\n",
            0,
        );
        assert_eq!(token.status, 200);
        assert_eq!(
            token.headers,
            vec![("X-metadata-token-ttl-seconds".into(), "10".into())]
        );
        let with = format!(
            "GET /latest/meta-data/instance-id HTTP/1.1\r\nX-metadata-token: {}\r\n\r\n",
            token.body
        );
        let r = ask(&m, &with, 5);
        assert_eq!((r.status, r.body.as_str()), (200, "i-1234"));
        assert_eq!(ask(&m, &with, 10).status, 401);
        let bad = "GET /latest HTTP/1.1\r\nX-metadata-token: nope\r\n\r\n";
        assert_eq!(ask(&m, bad, 0).body, "MMDS token not valid.");
    }

    #[test]
    fn v1_answers_without_a_token_in_json_or_imds() {
        let m = mmds(MmdsVersion::V1);
        let r = ask(&m, "GET /latest/meta-data HTTP/1.1\r\n\r\n", 0);
        assert_eq!((r.status, r.body.as_str()), (200, "instance-id"));
        let r = ask(
            &m,
            "GET /latest/meta-data HTTP/1.1\r\nAccept: application/json\r\n\r\n",
            0,
        );
        assert_eq!(r.body, r#"{"instance-id":"i-1234"}"#);
        assert_eq!(r.content_type, ContentType::Json);
        let r = ask(&m, "GET /nope HTTP/1.1\r\n\r\n", 0);
        assert_eq!(
            (r.status, r.body.as_str()),
            (404, "Resource not found: /nope.")
        );
    }

    #[test]
    fn imds_compat_ignores_accept() {
        let mut m = mmds(MmdsVersion::V1);
        m.set_imds_compat(true);
        let r = ask(
            &m,
            "GET /latest/meta-data HTTP/1.1\r\nAccept: application/json\r\n\r\n",
            0,
        );
        assert_eq!(r.body, "instance-id");
    }

    #[test]
    fn token_request_errors() {
        let m = mmds(MmdsVersion::V2);
        let cases = [
            ("PUT /latest/api/token HTTP/1.1\r\n\r\n", 400),
            ("PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: x\r\n\r\n", 400),
            ("PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 0\r\n\r\n", 400),
            ("PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 21601\r\n\r\n", 400),
            ("PUT /latest/api/token HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\nX-metadata-token-ttl-seconds: 5\r\n\r\n", 400),
            ("PUT /latest/api HTTP/1.1\r\nX-metadata-token-ttl-seconds: 5\r\n\r\n", 404),
            ("POST /latest/api/token HTTP/1.1\r\n\r\n", 405),
            ("GET * HTTP/1.1\r\n\r\n", 400),
            ("PUT //latest//api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 5\r\n\r\n", 200),
        ];
        for (text, status) in cases {
            assert_eq!(ask(&m, text, 0).status, status, "{text}");
        }
    }
}
