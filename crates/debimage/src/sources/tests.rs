//! Unit tests of apt source parsing and mirror selection.

use super::*;

const BOOKWORM_DEB822: &str = "\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

#[test]
fn deb822_stanzas_are_parsed() {
    let entries = parse_deb822(BOOKWORM_DEB822);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].uris, ["http://deb.debian.org/debian"]);
    assert_eq!(entries[0].suites, ["bookworm", "bookworm-updates"]);
    assert_eq!(entries[0].components, ["main"]);
    assert_eq!(entries[1].suites, ["bookworm-security"]);
}

#[test]
fn deb822_disabled_stanzas_and_continuations() {
    let text = "Types: deb\nURIs: http://a/debian\nSuites: bookworm\nEnabled: no\n\n\
                Types: deb deb-src\nURIs:\n http://b/debian\n http://c/debian\nSuites: trixie\n";
    let entries = parse_deb822(text);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].types, ["deb", "deb-src"]);
    assert_eq!(entries[0].uris, ["http://b/debian", "http://c/debian"]);
}

#[test]
fn one_line_format_with_options_and_comments() {
    let text = "# comment\n\
                deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main contrib\n\
                deb-src http://mirror.example/debian bookworm main\n\
                deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main # trailing\n";
    let entries = parse_one_line(text);
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].uris, ["http://mirror.example/debian"]);
    assert_eq!(entries[0].components, ["main", "contrib"]);
    assert_eq!(entries[1].types, ["deb-src"]);
    assert_eq!(entries[2].suites, ["cloud-sdk-bookworm"]);
}

#[test]
fn mirrors_prefer_the_codename_and_skip_third_party() {
    let mut entries =
        parse_one_line("deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n");
    entries.extend(parse_deb822(BOOKWORM_DEB822));
    let m = find_mirrors(&entries, "bookworm").unwrap();
    assert_eq!(m.archive, "http://deb.debian.org/debian");
    assert_eq!(
        m.security.as_deref(),
        Some("http://deb.debian.org/debian-security")
    );
    // A host on bookworm still gives the archive for a trixie build.
    let m = find_mirrors(&entries, "trixie").unwrap();
    assert_eq!(m.archive, "http://deb.debian.org/debian");
}

#[test]
fn no_debian_source_is_none() {
    let entries = parse_one_line(
        "deb https://deb.nodesource.com/node_20.x nodistro main\ndeb-src http://x/debian bookworm main\n",
    );
    assert_eq!(find_mirrors(&entries, "bookworm"), None);
}

#[test]
fn host_mirrors_reads_a_root_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("etc/apt/sources.list.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("debian.sources"), BOOKWORM_DEB822).unwrap();
    std::fs::write(
        dir.join("other.list.disabled"),
        "deb http://wrong/debian bookworm main\n",
    )
    .unwrap();
    let m = host_mirrors(root.path(), "bookworm").unwrap();
    assert_eq!(m.archive, "http://deb.debian.org/debian");

    let empty = tempfile::tempdir().unwrap();
    let err = host_mirrors(empty.path(), "bookworm")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no Debian mirror"), "{err}");
    assert!(err.contains("sources.list"), "{err}");
}
