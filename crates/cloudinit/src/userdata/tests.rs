//! Tests of user-data rendering: formats, merging headers, MIME layout, refusals.

use super::*;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJC me";

fn keys() -> Vec<String> {
    vec![KEY.to_string()]
}

/// Splits a multipart message into (boundary, parts), each part as written.
fn parts(msg: &str) -> (String, Vec<String>) {
    let first = msg.lines().next().unwrap_or("");
    let boundary = first
        .split("boundary=\"")
        .nth(1)
        .unwrap_or("")
        .trim_end_matches('"')
        .to_string();
    let delim = format!("\n--{boundary}");
    let body = msg
        .split_once("\n\n")
        .map(|(_, b)| format!("\n{b}"))
        .unwrap_or_default();
    let mut pieces: Vec<String> = body.split(&delim).map(str::to_string).collect();
    pieces.remove(0);
    assert_eq!(pieces.pop().as_deref(), Some("--\n"));
    let pieces = pieces
        .into_iter()
        .map(|p| p.trim_start_matches('\n').to_string())
        .collect();
    (boundary, pieces)
}

/// The body of a part, base64-decoded when it says so.
fn body(part: &str) -> String {
    let (headers, body) = part.split_once("\n\n").unwrap_or(("", ""));
    if headers.contains("Content-Transfer-Encoding: base64") {
        let joined: String = body.lines().collect();
        String::from_utf8(STANDARD.decode(joined).unwrap_or_default()).unwrap_or_default()
    } else {
        body.to_string()
    }
}

#[test]
fn plain_without_extra() {
    let text = render(&keys(), None, None, &[]).unwrap_or_default();
    assert!(text.starts_with("#cloud-config\n"));
    assert_eq!(
        render(&keys(), None, Some(" \n"), &[]).unwrap_or_default(),
        text
    );
}

#[test]
fn classification() {
    assert_eq!(
        classify("#cloud-config\na: 1").ok(),
        Some(Kind::CloudConfig)
    );
    assert_eq!(classify("  #Cloud-Config\n").ok(), Some(Kind::CloudConfig));
    assert_eq!(
        classify("#cloud-config-archive\n").ok(),
        Some(Kind::Other("text/cloud-config-archive"))
    );
    assert_eq!(
        classify("#!/bin/sh\n").ok(),
        Some(Kind::Other("text/x-shellscript"))
    );
    assert_eq!(
        classify("#include-once\nhttp://x\n").ok(),
        Some(Kind::Other("text/x-include-once-url"))
    );
    assert_eq!(
        classify("#include\nhttp://x\n").ok(),
        Some(Kind::Other("text/x-include-url"))
    );
    assert_eq!(
        classify("## template: jinja\n#cloud-config\n").ok(),
        Some(Kind::Other("text/jinja2"))
    );
    assert_eq!(
        classify("Content-Type: text/plain\nMIME-Version: 1.0\n\nx").ok(),
        Some(Kind::Mime)
    );
    assert!(matches!(classify("hello"), Err(UserDataError::UnknownFormat(s)) if s == "hello"));
    assert!(classify("").is_err());
}

#[test]
fn cloud_config_is_merged_by_cloud_init() {
    let extra = "#cloud-config\npackages: [htop]\nssh_authorized_keys: [\"x\"]\n";
    let text = render(&keys(), None, Some(extra), &[]).unwrap_or_default();
    assert!(text.starts_with("Content-Type: multipart/mixed; boundary=\"vessel-seed-"));
    let (boundary, p) = parts(&text);
    assert_eq!(p.len(), 2);
    assert!(p[0].starts_with("Content-Type: text/cloud-config; charset=\"utf-8\"\n"));
    assert_eq!(body(&p[0]), extra);
    assert!(p[1].contains(&format!("\nMerge-Type: {MERGE_TYPE}\n\n#cloud-config\n")));
    assert!(body(&p[1]).starts_with("#cloud-config\nusers:\n"));
    assert!(!extra.contains(&boundary));
}

#[test]
fn scripts_keep_every_byte() {
    let script = "#!/bin/sh\necho 'héllo ✓' > /x\n--vessel-seed-0\n\n";
    let text = render(&keys(), Some("vessel"), Some(script), &[]).unwrap_or_default();
    let (_, p) = parts(&text);
    assert!(p[0].starts_with("Content-Type: text/x-shellscript;"));
    assert_eq!(body(&p[0]), script);
    assert!(text.is_ascii());
}

#[test]
fn mime_goes_in_verbatim_with_a_fresh_boundary() {
    let mut seed = String::new();
    let mime = loop {
        // Make the user's message contain the first boundary vessel would pick.
        let candidate = format!(
            "Content-Type: multipart/mixed; boundary=\"b\"\nMIME-Version: 1.0\n\n--b\n\
             Content-Type: text/x-shellscript\n\n#!/bin/sh\ntrue\n{seed}\n--b--\n"
        );
        let text = render(&keys(), None, Some(&candidate), &[]).unwrap_or_default();
        let (boundary, _) = parts(&text);
        if seed.contains(&boundary) || seed.len() > 200 {
            break candidate;
        }
        seed.push_str(&format!("--{boundary}"));
    };
    let text = render(&keys(), None, Some(&mime), &[]).unwrap_or_default();
    let (boundary, p) = parts(&text);
    assert!(!mime.contains(&boundary));
    assert_eq!(p[0], mime);
}

#[test]
fn refusals() {
    let yaml_err = render(&keys(), None, Some("#cloud-config\na: b\n  c: [d\n"), &[]).err();
    match yaml_err {
        Some(UserDataError::Yaml {
            line,
            column,
            message,
        }) => {
            assert_eq!((line, column), (Some(3), Some(4)));
            assert!(message.contains("line 3 column 4"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        render(&keys(), None, Some("#cloud-config\n- a\n"), &[]),
        Err(UserDataError::NotAMapping("list"))
    ));
    assert!(matches!(
        render(&keys(), None, Some("#cloud-config\nx\n"), &[]),
        Err(UserDataError::NotAMapping("scalar"))
    ));
    assert!(render(&keys(), None, Some("#cloud-config\n"), &[]).is_ok());
    assert!(matches!(
        render(&keys(), None, Some("echo hi"), &[]),
        Err(UserDataError::UnknownFormat(_))
    ));
    assert!(matches!(
        render(&keys(), None, Some("\nMIME-Version: 1.0\n"), &[]),
        Err(UserDataError::MimeHeaders)
    ));
    let big = format!("#!/bin/sh\n{}", "#".repeat(MAX_EXTRA_USER_DATA));
    assert!(matches!(
        render(&keys(), None, Some(&big), &[]),
        Err(UserDataError::TooLarge { .. })
    ));
}
