//! `[[provision]]` in a VM definition: what runs in the guest over SSH on its first start
//! and on `vessel provision` (Vagrant's shell, file and ansible provisioners).
//!
//! ```toml
//! [[provision]]
//! shell = "apt-get install -y nginx"          # or script = "setup.sh", args = ["x"]
//! privileged = true                            # run with sudo (the default)
//! [[provision]]
//! file = { source = "site/", destination = "/srv/site" }
//! [[provision]]
//! name = "site"
//! ansible = { playbook = "site.yml", extra_vars = { port = 8080 } }
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// One `[[provision]]` entry: exactly one of `shell`, `script`, `file`, `ansible`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Provisioner {
    /// Name shown in the output and given to `vessel provision --only` (default: the kind
    /// and its position, e.g. `shell-1`).
    pub name: Option<Spanned<String>>,
    /// An inline shell script.
    pub shell: Option<Spanned<String>>,
    /// A script on the host (relative to the definition file), copied and run in the guest.
    pub script: Option<Spanned<PathBuf>>,
    /// Arguments of `shell` or `script`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Run `shell` or `script` as root through sudo (default true, as Vagrant).
    pub privileged: Option<Spanned<bool>>,
    /// Copy a host file or directory into the guest.
    pub file: Option<FileCopy>,
    /// Run an Ansible playbook against the VM.
    pub ansible: Option<AnsiblePlay>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileCopy {
    pub source: Spanned<PathBuf>,
    pub destination: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnsiblePlay {
    pub playbook: Spanned<PathBuf>,
    /// Passed to ansible-playbook as `--extra-vars` JSON.
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub extra_vars: toml::Table,
}

/// What a provisioner does.
pub enum Action<'a> {
    Shell(&'a str),
    Script(&'a Path),
    File(&'a Path, &'a str),
    Ansible(&'a AnsiblePlay),
}

impl Provisioner {
    pub fn action(&self) -> Option<Action<'_>> {
        match (&self.shell, &self.script, &self.file, &self.ansible) {
            (Some(s), None, None, None) => Some(Action::Shell(s.get_ref())),
            (None, Some(p), None, None) => Some(Action::Script(p.get_ref())),
            (None, None, Some(f), None) => {
                Some(Action::File(f.source.get_ref(), f.destination.get_ref()))
            }
            (None, None, None, Some(a)) => Some(Action::Ansible(a)),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self.action() {
            Some(Action::Shell(_)) | Some(Action::Script(_)) => "shell",
            Some(Action::File(..)) => "file",
            Some(Action::Ansible(_)) => "ansible",
            None => "provision",
        }
    }

    /// The provisioner's name: its `name`, else `KIND-N` (N counts from 1).
    pub fn display_name(&self, index: usize) -> String {
        match &self.name {
            Some(n) => n.get_ref().clone(),
            None => format!("{}-{}", self.kind(), index + 1),
        }
    }

    pub fn privileged(&self) -> bool {
        self.privileged.as_ref().is_none_or(|p| *p.get_ref())
    }

    /// Host paths it reads, for resolving.
    fn paths_mut(&mut self) -> Vec<&mut Spanned<PathBuf>> {
        let mut v = Vec::new();
        if let Some(s) = &mut self.script {
            v.push(s);
        }
        if let Some(f) = &mut self.file {
            v.push(&mut f.source);
        }
        if let Some(a) = &mut self.ansible {
            v.push(&mut a.playbook);
        }
        v
    }

    /// Host paths it reads, for checking: (path, what, may be a directory).
    fn paths(&self) -> Vec<(&Spanned<PathBuf>, &'static str, bool)> {
        let mut v = Vec::new();
        if let Some(s) = &self.script {
            v.push((s, "provision script", false));
        }
        if let Some(f) = &self.file {
            v.push((&f.source, "provision file source", true));
        }
        if let Some(a) = &self.ansible {
            v.push((&a.playbook, "ansible playbook", false));
        }
        v
    }
}

/// Problems of a provisioner list that need no file system: (span, message).
pub fn problems(list: &[Spanned<Provisioner>]) -> Vec<(Range<usize>, String)> {
    let mut out = Vec::new();
    let mut names = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let span = p.span();
        let p = p.get_ref();
        let Some(action) = p.action() else {
            out.push((
                span,
                "a [[provision]] needs exactly one of shell, script, file or ansible".into(),
            ));
            continue;
        };
        let runs_shell = matches!(action, Action::Shell(_) | Action::Script(_));
        if !runs_shell && !p.args.is_empty() {
            out.push((
                span.clone(),
                "args is only for shell and script provisioners".into(),
            ));
        }
        if let (false, Some(pr)) = (runs_shell, &p.privileged) {
            out.push((
                pr.span(),
                "privileged is only for shell and script provisioners".into(),
            ));
        }
        if let Some(n) = &p.name {
            if !crate::vmdef::valid_name(n.get_ref()) {
                out.push((
                    n.span(),
                    format!(
                        "invalid provisioner name '{}': use letters, digits, '-', '_' or '.'",
                        n.get_ref()
                    ),
                ));
            }
        }
        if let Action::File(_, dest) = action {
            if !dest.starts_with('/') {
                let span = p
                    .file
                    .as_ref()
                    .map_or(span.clone(), |f| f.destination.span());
                out.push((
                    span,
                    format!("file destination '{dest}' must be an absolute guest path"),
                ));
            }
        }
        let name = p.display_name(i);
        if names.contains(&name) {
            out.push((span, format!("two provisioners are named '{name}'")));
        }
        names.push(name);
    }
    out
}

/// Make the host paths of every provisioner absolute, relative to `dir`.
pub fn resolve_paths(list: &mut [Spanned<Provisioner>], dir: &Path) {
    for p in list {
        for path in p.get_mut().paths_mut() {
            if path.get_ref().is_relative() {
                *path = Spanned::new(path.span(), dir.join(path.get_ref()));
            }
        }
    }
}

/// Host paths that do not exist: (span, message).
pub fn missing_files(list: &[Spanned<Provisioner>]) -> Vec<(Range<usize>, String)> {
    let mut out = Vec::new();
    for p in list {
        for (path, what, dir_ok) in p.get_ref().paths() {
            let f = path.get_ref();
            let ok = f.is_file() || (dir_ok && f.is_dir());
            if !ok {
                let kind = if dir_ok { "file or directory" } else { "file" };
                out.push((
                    path.span(),
                    format!("{what} {} does not exist or is not a {kind}", f.display()),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        provision: Vec<Spanned<Provisioner>>,
    }

    fn parse(text: &str) -> Vec<Spanned<Provisioner>> {
        toml::from_str::<Doc>(text).unwrap().provision
    }

    fn messages(text: &str) -> Vec<String> {
        problems(&parse(text)).into_iter().map(|(_, m)| m).collect()
    }

    #[test]
    fn each_kind_parses_and_gets_a_default_name() {
        let list = parse(
            "[[provision]]\nshell = \"true\"\n[[provision]]\nfile = { source = \"a\", destination = \"/b\" }\n[[provision]]\nname = \"site\"\nansible = { playbook = \"p.yml\", extra_vars = { port = 8080 } }\n",
        );
        let names: Vec<String> = list
            .iter()
            .enumerate()
            .map(|(i, p)| p.get_ref().display_name(i))
            .collect();
        assert_eq!(names, ["shell-1", "file-2", "site"]);
        assert!(list[0].get_ref().privileged());
        assert!(problems(&list).is_empty());
    }

    #[test]
    fn bad_entries_are_named() {
        assert_eq!(
            messages("[[provision]]\n"),
            ["a [[provision]] needs exactly one of shell, script, file or ansible"]
        );
        assert_eq!(
            messages("[[provision]]\nshell = \"x\"\nscript = \"y\"\n").len(),
            1
        );
        assert!(
            messages("[[provision]]\nfile = { source = \"a\", destination = \"rel\" }\n")[0]
                .contains("absolute guest path")
        );
        assert!(messages(
            "[[provision]]\nfile = { source = \"a\", destination = \"/x\" }\nargs = [\"1\"]\n"
        )[0]
        .contains("args is only"));
        assert!(
            messages("[[provision]]\nansible = { playbook = \"p\" }\nprivileged = false\n")[0]
                .contains("privileged is only")
        );
        assert!(messages("[[provision]]\nname = \"a\"\nshell = \"x\"\n[[provision]]\nname = \"a\"\nshell = \"y\"\n")[0].contains("two provisioners are named 'a'"));
        assert!(
            messages("[[provision]]\nname = \"a b\"\nshell = \"x\"\n")[0]
                .contains("invalid provisioner name")
        );
    }

    #[test]
    fn missing_host_files_are_reported_after_resolving() {
        let dir = std::env::temp_dir().join(format!("vessel-prov-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("site")).unwrap();
        std::fs::write(dir.join("setup.sh"), "true\n").unwrap();
        let mut list = parse(
            "[[provision]]\nscript = \"setup.sh\"\n[[provision]]\nfile = { source = \"site\", destination = \"/srv\" }\n[[provision]]\nansible = { playbook = \"gone.yml\" }\n",
        );
        resolve_paths(&mut list, &dir);
        let missing = missing_files(&list);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(missing[0].1.contains("ansible playbook"));
        assert!(missing[0].1.contains("gone.yml"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
