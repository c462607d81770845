//! grub.cfg: which kernel, initrd and command line GRUB boots by default.
//!
//! The script is tokenized ([`lexer`]), parsed ([`parse`]) and evaluated ([`eval`]) far
//! enough to know the menu and the final `default`: `set default="N"`, a title or id, a
//! `>`-separated submenu path, or `${saved_entry}` from grubenv; anything unknown or empty
//! means entry 0, as in GRUB. Unknown `$variables` expand to nothing.

mod eval;
mod lexer;
mod parse;

use eval::{Env, Loaded};
use parse::Stmt;

/// Problems with a grub.cfg.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("line {line}: {reason}")]
    Syntax { line: usize, reason: String },
    #[error("has no menuentry")]
    NoEntries,
    #[error("menu entry '{title}' has no `linux` command")]
    NoLinux { title: String },
}

/// A menu item: an entry, or a submenu of further items.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    Entry {
        title: String,
        id: Option<String>,
        body: Vec<Stmt>,
    },
    Submenu {
        title: String,
        id: Option<String>,
        items: Vec<Item>,
    },
}

impl Item {
    /// Title shown in the menu.
    pub fn title(&self) -> &str {
        match self {
            Item::Entry { title, .. } | Item::Submenu { title, .. } => title,
        }
    }

    fn id(&self) -> Option<&str> {
        match self {
            Item::Entry { id, .. } | Item::Submenu { id, .. } => id.as_deref(),
        }
    }
}

/// The kernel, initrds and command line of one menu entry. Paths are absolute within the
/// file system GRUB's `$root` names, with any `(device)` prefix removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    pub title: String,
    pub kernel: String,
    pub initrds: Vec<String>,
    pub cmdline: String,
}

/// An evaluated grub.cfg.
#[derive(Debug, Clone)]
pub struct Config {
    /// Top-level menu items in order.
    items: Vec<Item>,
    env: Env,
}

/// Parse and evaluate `text`; `grubenv` is the content of grubenv, if any (`load_env`).
pub fn parse(text: &str, grubenv: Option<&str>) -> Result<Config, Error> {
    let stmts = parse::parse(&lexer::tokenize(text))?;
    let mut env = Env::new(grubenv.map(parse_grubenv).unwrap_or_default());
    let items = collect(&stmts, &mut env);
    Ok(Config { items, env })
}

/// Run `stmts` and gather the menu items they define.
fn collect(stmts: &[Stmt], env: &mut Env) -> Vec<Item> {
    let mut items = Vec::new();
    let mut on_menu = |env: &Env, submenu: bool, args: Vec<String>, body: &[Stmt], _line| {
        let (title, id) = title_and_id(&args);
        items.push(if submenu {
            Item::Submenu {
                title,
                id,
                items: collect(body, &mut env.clone()),
            }
        } else {
            Item::Entry {
                title,
                id,
                body: body.to_vec(),
            }
        });
    };
    eval::run(stmts, env, &mut Loaded::default(), &mut on_menu);
    items
}

/// The title (first operand) and `--id` of `menuentry` arguments.
fn title_and_id(args: &[String]) -> (String, Option<String>) {
    let mut title = None;
    let mut id = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--class" | "--users" | "--hotkey" | "--source" => {
                it.next();
            }
            "--id" => id = it.next().cloned(),
            _ if a.starts_with("--id=") => id = Some(a["--id=".len()..].to_string()),
            _ if a.starts_with("--") => {}
            _ if title.is_none() => title = Some(a.clone()),
            _ => {}
        }
    }
    (title.unwrap_or_default(), id)
}

/// `name=value` lines of a grubenv block (comments and `#` padding ignored).
pub fn parse_grubenv(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Config {
    /// Every entry title, submenu entries as `submenu>entry` (for messages and tests).
    pub fn titles(&self) -> Vec<String> {
        fn walk(items: &[Item], prefix: &str, out: &mut Vec<String>) {
            for i in items {
                let name = format!("{prefix}{}", i.title());
                match i {
                    Item::Entry { .. } => out.push(name),
                    Item::Submenu { items, .. } => walk(items, &format!("{name}>"), out),
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.items, "", &mut out);
        out
    }

    /// The value `default` has after the script ran ("0" when unset or empty).
    pub fn default_spec(&self) -> String {
        match self.env.get("default").trim() {
            "" => "0".to_string(),
            d => d.to_string(),
        }
    }

    /// The entry GRUB boots without user input: the `default` entry, falling back to the
    /// first entry when `default` names nothing; a chosen submenu means its first entry.
    pub fn default_entry(&self) -> Result<BootEntry, Error> {
        let spec = self.default_spec();
        let mut parts = spec.split('>');
        let mut level = self.items.as_slice();
        let (title, body) = loop {
            let wanted = parts.next().and_then(|p| select(level, p.trim()));
            match wanted.or(level.first()).ok_or(Error::NoEntries)? {
                Item::Entry { title, body, .. } => break (title, body),
                Item::Submenu { items, .. } => level = items,
            }
        };
        let mut env = self.env.clone();
        let mut loaded = Loaded::default();
        eval::run(body, &mut env, &mut loaded, &mut |_, _, _, _, _| {});
        let linux = loaded.linux.unwrap_or_default();
        let Some((kernel, args)) = linux.split_first() else {
            return Err(Error::NoLinux {
                title: title.clone(),
            });
        };
        Ok(BootEntry {
            title: title.clone(),
            kernel: strip_device(kernel),
            initrds: loaded.initrd.iter().map(|p| strip_device(p)).collect(),
            cmdline: args.join(" "),
        })
    }
}

/// Item `spec` of `items`: by number, title or id.
fn select<'a>(items: &'a [Item], spec: &str) -> Option<&'a Item> {
    if let Ok(n) = spec.parse::<usize>() {
        return items.get(n);
    }
    items
        .iter()
        .find(|i| i.title() == spec || i.id() == Some(spec))
}

/// `(hd0,gpt1)/boot/vmlinuz` → `/boot/vmlinuz`; relative paths become absolute.
fn strip_device(path: &str) -> String {
    let rest = match path.strip_prefix('(') {
        Some(p) => p.split_once(')').map_or("", |(_, rest)| rest),
        None => path,
    };
    if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    }
}

#[cfg(test)]
mod tests;
