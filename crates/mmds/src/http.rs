//! The guest side's HTTP/1.x: a bounded request parser (httparse) over the bytes a
//! connection received so far, and responses written with `Connection: close` (one request
//! per connection).

/// Longest request accepted, head and body (a token request or a GET is a few hundred bytes).
pub const MAX_REQUEST_LEN: usize = 8 * 1024;
/// Most headers in a request.
const MAX_HEADERS: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("Request too large: at most {MAX_REQUEST_LEN} bytes.")]
    TooLarge,
    #[error("Invalid request: {0}.")]
    Malformed(String),
    #[error("Invalid Content-Length.")]
    ContentLength,
}

/// A parsed request; header names are kept as sent (compare them case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The absolute path of the request target (an absolute-form target loses its scheme
    /// and host); empty when the target has none.
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// HTTP/1.0 (otherwise 1.1).
    pub http10: bool,
}

impl Request {
    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the request at the start of `buf`: `Ok(None)` while incomplete (head or body),
/// the request once all of it arrived.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST_LEN => {
            return Err(HttpError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    let mut body_len = 0usize;
    let mut kept = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value).trim().to_string();
        if h.name.eq_ignore_ascii_case("content-length") {
            body_len = value.parse().map_err(|_| HttpError::ContentLength)?;
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::Malformed(
                "chunked bodies are not accepted".into(),
            ));
        }
        kept.push((h.name.to_string(), value));
    }
    let total = head_len
        .checked_add(body_len)
        .ok_or(HttpError::ContentLength)?;
    if total > MAX_REQUEST_LEN {
        return Err(HttpError::TooLarge);
    }
    if buf.len() < total {
        return Ok(None);
    }
    let target = req.path.unwrap_or_default();
    Ok(Some(Request {
        method: req.method.unwrap_or_default().to_string(),
        path: absolute_path(target).to_string(),
        headers: kept,
        http10: req.version == Some(0),
    }))
}

/// The path of an origin-form (`/a/b?q`) or absolute-form (`http://host/a/b`) target,
/// without its query.
fn absolute_path(target: &str) -> &str {
    let path = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None if target.starts_with('/') => target,
        None => "",
    };
    path.split(['?', '#']).next().unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    Text,
    Json,
}

/// A response to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: ContentType,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Response {
    pub fn new(status: u16, content_type: ContentType, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(status, ContentType::Text, body)
    }

    pub fn with_header(mut self, name: &str, value: String) -> Self {
        self.headers.push((name.to_string(), value));
        self
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self, http10: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            405 => "Method Not Allowed",
            413 => "Payload Too Large",
            501 => "Not Implemented",
            _ => "Internal Server Error",
        };
        let content_type = match self.content_type {
            ContentType::Text => "text/plain",
            ContentType::Json => "application/json",
        };
        let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        let mut head = format!(
            "{version} {} {reason}\r\nServer: vessel\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_token_request_and_a_get() {
        let put = b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n";
        let req = parse_request(put).unwrap().unwrap();
        assert_eq!(req.method, "PUT");
        assert_eq!(req.path, "/latest/api/token");
        assert_eq!(req.header("x-METADATA-token-ttl-seconds"), Some("60"));
        assert!(!req.http10);
        let get = b"GET http://169.254.169.254/latest/meta-data?x=1 HTTP/1.0\r\n\r\n";
        let req = parse_request(get).unwrap().unwrap();
        assert_eq!(req.path, "/latest/meta-data");
        assert!(req.http10);
    }

    #[test]
    fn waits_for_the_whole_head_and_body() {
        let full = b"PUT /latest/api/token HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd";
        for cut in 0..full.len() {
            assert_eq!(parse_request(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse_request(full).unwrap().is_some());
    }

    #[test]
    fn hostile_requests_get_errors() {
        let big = vec![b'a'; MAX_REQUEST_LEN];
        assert_eq!(parse_request(&big), Err(HttpError::TooLarge));
        let mut long_head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long_head.resize(MAX_REQUEST_LEN, b'x');
        assert_eq!(parse_request(&long_head), Err(HttpError::TooLarge));
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n"),
            Err(HttpError::TooLarge)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Err(HttpError::ContentLength)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n"),
            Err(HttpError::ContentLength)
        );
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            parse_request(b"\x00\x01 / HTTP/1.1\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse_request(&many), Err(HttpError::Malformed(_))));
    }

    #[test]
    fn response_bytes() {
        let r = Response::text(200, "tok").with_header("X-metadata-token-ttl-seconds", "60".into());
        let text = String::from_utf8(r.to_bytes(false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 3\r\n"));
        assert!(text.contains("X-metadata-token-ttl-seconds: 60\r\n"));
        assert!(text.ends_with("\r\n\r\ntok"));
    }
}
