//! Evaluation of a parsed grub.cfg the way GRUB would at boot with no key pressed:
//! top-level commands run in order (`set`, assignments, `load_env`, `if` with `[ ... ]`
//! tests), menu entries are collected with their bodies, and only the chosen entry's body
//! runs later, with the final variables, to find its `linux` and `initrd` commands.

use std::collections::HashMap;

use super::lexer::{Part, Word};
use super::parse::Stmt;

/// Variables, seeded as a current GRUB on a BIOS PC would have them.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    vars: HashMap<String, String>,
    /// Variables of grubenv, merged by `load_env`.
    grubenv: Vec<(String, String)>,
}

impl Env {
    pub(crate) fn new(grubenv: Vec<(String, String)>) -> Env {
        let mut vars = HashMap::new();
        for f in [
            "feature_menuentry_id",
            "feature_default_font_path",
            "feature_all_video_module",
            "feature_timeout_style",
            "feature_platform_search_hint",
            "feature_chainloader_bpb",
            "feature_ntldr",
            "feature_200_final",
        ] {
            vars.insert(f.to_string(), "y".to_string());
        }
        vars.insert("grub_platform".into(), "pc".into());
        vars.insert("grub_cpu".into(), "i386".into());
        Env { vars, grubenv }
    }

    pub(crate) fn get(&self, name: &str) -> &str {
        self.vars.get(name).map(String::as_str).unwrap_or("")
    }

    /// Expand words to arguments; unquoted words that expand to nothing are dropped.
    pub(crate) fn expand(&self, words: &[Word]) -> Vec<String> {
        words
            .iter()
            .filter_map(|w| {
                let s: String = w
                    .parts
                    .iter()
                    .map(|p| match p {
                        Part::Lit(s) => s.as_str(),
                        Part::Var(name) => self.get(name),
                    })
                    .collect();
                (w.quoted || !s.is_empty()).then_some(s)
            })
            .collect()
    }
}

/// What running statements found: the kernel and initrd commands of an entry body.
#[derive(Debug, Default, Clone)]
pub(crate) struct Loaded {
    /// `linux` arguments (path first), last command wins.
    pub(crate) linux: Option<Vec<String>>,
    /// `initrd` arguments (paths), last command wins.
    pub(crate) initrd: Vec<String>,
}

/// Callback for a `menuentry` (false) or `submenu` (true): variables, expanded arguments,
/// body and line.
pub(crate) type OnMenu<'a> = dyn FnMut(&Env, bool, Vec<String>, &[Stmt], usize) + 'a;

/// Run `stmts`; menu statements are handed to `on_menu` (with expanded arguments) instead of
/// being entered. Returns the status of the last command (0 = success).
pub(crate) fn run(
    stmts: &[Stmt],
    env: &mut Env,
    loaded: &mut Loaded,
    on_menu: &mut OnMenu<'_>,
) -> u8 {
    let mut status = 0;
    for s in stmts {
        status = match s {
            Stmt::Cmd(words) => command(&env.expand(words), env, loaded),
            Stmt::If {
                branches,
                otherwise,
            } => {
                let taken = branches
                    .iter()
                    .find(|(cond, _)| run(cond, env, loaded, on_menu) == 0)
                    .map(|(_, body)| body.as_slice())
                    .unwrap_or(otherwise);
                run(taken, env, loaded, on_menu)
            }
            Stmt::Menu {
                submenu,
                args,
                body,
                line,
            } => {
                on_menu(env, *submenu, env.expand(args), body, *line);
                0
            }
            Stmt::Skipped => 0,
        };
    }
    status
}

/// Run one command; unknown commands (insmod, load_video, search, ...) succeed.
fn command(argv: &[String], env: &mut Env, loaded: &mut Loaded) -> u8 {
    let Some(name) = argv.first() else {
        return 0;
    };
    if let Some((var, value)) = assignment(name) {
        env.vars.insert(var.to_string(), value.to_string());
        return 0;
    }
    match name.as_str() {
        "set" => {
            for arg in &argv[1..] {
                if let Some((var, value)) = assignment(arg) {
                    env.vars.insert(var.to_string(), value.to_string());
                }
            }
            0
        }
        "unset" => {
            for arg in &argv[1..] {
                env.vars.remove(arg);
            }
            0
        }
        "load_env" => {
            let vars = env.grubenv.clone();
            env.vars.extend(vars);
            0
        }
        "[" | "test" => {
            let args = &argv[1..];
            let args = match args.split_last() {
                Some((last, rest)) if name == "[" && last == "]" => rest,
                _ if name == "[" => return 1,
                _ => args,
            };
            u8::from(!test(args, !env.grubenv.is_empty()))
        }
        "false" => 1,
        "linux" | "linux16" | "linuxefi" => {
            loaded.linux = (argv.len() > 1).then(|| argv[1..].to_vec());
            0
        }
        "initrd" | "initrd16" | "initrdefi" => {
            loaded.initrd = argv[1..].to_vec();
            0
        }
        _ => 0,
    }
}

/// `name=value` with a valid variable name.
fn assignment(word: &str) -> Option<(&str, &str)> {
    let (name, value) = word.split_once('=')?;
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some((name, value))
}

/// GRUB's `test`: strings, integers and file tests (files are unknown: only grubenv
/// exists, when one was found).
fn test(args: &[String], have_grubenv: bool) -> bool {
    let negations = args.iter().take_while(|a| *a == "!").count();
    if negations > 0 {
        return (negations % 2 == 1) != test(&args[negations..], have_grubenv);
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        [] => false,
        [s] => !s.is_empty(),
        ["-n", s] => !s.is_empty(),
        ["-z", s] => s.is_empty(),
        ["-s" | "-f" | "-e", path] => have_grubenv && path.ends_with("/grubenv"),
        ["-d", _] => false,
        [x, "=" | "==", y] => x == y,
        [x, "!=", y] => x != y,
        [x, op @ ("-eq" | "-ne" | "-lt" | "-gt" | "-le" | "-ge"), y] => {
            let (Ok(x), Ok(y)) = (x.trim().parse::<i64>(), y.trim().parse::<i64>()) else {
                return false;
            };
            match *op {
                "-eq" => x == y,
                "-ne" => x != y,
                "-lt" => x < y,
                "-gt" => x > y,
                "-le" => x <= y,
                _ => x >= y,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(args: &[&str]) -> bool {
        test(
            &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            false,
        )
    }

    #[test]
    fn tests() {
        assert!(t(&["x"]) && !t(&[""]) && !t(&[]));
        assert!(t(&["xy", "=", "xy"]) && t(&["a", "!=", "b"]) && !t(&["!", "a"]));
        assert!(t(&["3", "-gt", "2"]) && !t(&["x", "-gt", "2"]));
        assert!(t(&["-z", ""]) && !t(&["-s", "/boot/grub/grubenv"]));
        assert!(!t(&["a", "b", "c", "d"]));
    }

    #[test]
    fn assignments() {
        assert_eq!(assignment("a_1=b=c"), Some(("a_1", "b=c")));
        assert_eq!(assignment("1a=b"), None);
        assert_eq!(assignment("--set=root"), None);
    }
}
