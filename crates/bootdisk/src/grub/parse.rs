//! Parser from tokens to statements: commands, `if`/`elif`/`else`/`fi`, `menuentry` and
//! `submenu` blocks, `function` definitions and loops (kept only to be skipped). Nesting is
//! bounded so hostile input cannot exhaust the stack.

use super::lexer::{Token, Word};
use super::Error;

/// Deepest block nesting accepted.
const MAX_DEPTH: usize = 64;

/// A statement of the script.
#[derive(Debug, Clone)]
pub(crate) enum Stmt {
    /// A simple command and its arguments.
    Cmd(Vec<Word>),
    /// `if c1; then b1; elif c2; then b2; else b3; fi`.
    If {
        branches: Vec<(Vec<Stmt>, Vec<Stmt>)>,
        otherwise: Vec<Stmt>,
    },
    /// `menuentry args { body }` or `submenu args { body }`.
    Menu {
        submenu: bool,
        args: Vec<Word>,
        body: Vec<Stmt>,
        line: usize,
    },
    /// `function name { ... }`, `while/until/for ... done`: not evaluated.
    Skipped,
}

/// Parse a whole script.
pub(crate) fn parse(tokens: &[Token]) -> Result<Vec<Stmt>, Error> {
    let mut p = Parser { tokens, pos: 0 };
    let (body, end) = p.block(&[], 0)?;
    match end {
        None => Ok(body),
        Some((word, line)) => Err(syntax(line, format!("unexpected `{word}`"))),
    }
}

fn syntax(line: usize, reason: String) -> Error {
    Error::Syntax { line, reason }
}

/// The keyword that ended a block, and its line.
type Terminator = (String, usize);

struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
}

impl Parser<'_> {
    fn line(&self) -> usize {
        match self.tokens.get(self.pos).or(self.tokens.last()) {
            Some(Token::Word(_, l) | Token::End(l)) => *l,
            None => 1,
        }
    }

    /// Statements until one of the `terminators` keywords starts a command (returned with
    /// its line) or input ends (`None`). A stray terminator not in the list is an error.
    fn block(
        &mut self,
        terminators: &[&str],
        depth: usize,
    ) -> Result<(Vec<Stmt>, Option<Terminator>), Error> {
        if depth > MAX_DEPTH {
            return Err(syntax(self.line(), "blocks are nested too deeply".into()));
        }
        let mut out = Vec::new();
        loop {
            let words = match self.tokens.get(self.pos) {
                None => return Ok((out, None)),
                Some(Token::End(_)) => {
                    self.pos += 1;
                    continue;
                }
                Some(Token::Word(w, line)) => (w.bare().unwrap_or_default().to_string(), *line),
            };
            let (keyword, line) = words;
            if terminators.contains(&keyword.as_str()) {
                self.pos += 1;
                return Ok((out, Some((keyword, line))));
            }
            out.push(match keyword.as_str() {
                "if" => self.if_stmt(depth)?,
                "menuentry" | "submenu" => self.menu(keyword == "submenu", line, depth)?,
                "function" => self.skip_braced(depth)?,
                "while" | "until" | "for" => self.skip_loop(depth)?,
                "then" | "elif" | "else" | "fi" | "do" | "done" | "}" | "{" => {
                    return Err(syntax(line, format!("unexpected `{keyword}`")))
                }
                _ => Stmt::Cmd(self.command()),
            });
        }
    }

    /// Words up to the end of the command.
    fn command(&mut self) -> Vec<Word> {
        let mut words = Vec::new();
        while let Some(Token::Word(w, _)) = self.tokens.get(self.pos) {
            words.push(w.clone());
            self.pos += 1;
        }
        words
    }

    fn if_stmt(&mut self, depth: usize) -> Result<Stmt, Error> {
        let start = self.line();
        self.pos += 1;
        let mut branches = Vec::new();
        loop {
            let (cond, end) = self.block(&["then"], depth + 1)?;
            if end.is_none() {
                return Err(syntax(start, "`if` without `then`".into()));
            }
            let (body, end) = self.block(&["elif", "else", "fi"], depth + 1)?;
            branches.push((cond, body));
            match end.as_ref().map(|(k, _)| k.as_str()) {
                Some("elif") => continue,
                Some("else") => {
                    let (otherwise, end) = self.block(&["fi"], depth + 1)?;
                    if end.is_none() {
                        return Err(syntax(start, "`if` without `fi`".into()));
                    }
                    return Ok(Stmt::If {
                        branches,
                        otherwise,
                    });
                }
                Some(_) => {
                    return Ok(Stmt::If {
                        branches,
                        otherwise: Vec::new(),
                    })
                }
                None => return Err(syntax(start, "`if` without `fi`".into())),
            }
        }
    }

    /// Words up to a bare `{` on the same line (consumed); `None` if the line ends first.
    fn until_brace(&mut self) -> Option<Vec<Word>> {
        let mut words = Vec::new();
        while let Some(Token::Word(w, _)) = self.tokens.get(self.pos) {
            self.pos += 1;
            if w.bare() == Some("{") {
                return Some(words);
            }
            words.push(w.clone());
        }
        None
    }

    /// `menuentry args... {` body `}` (the `{` a word of its own, as grub-mkconfig writes).
    fn menu(&mut self, submenu: bool, line: usize, depth: usize) -> Result<Stmt, Error> {
        self.pos += 1;
        let what = if submenu { "submenu" } else { "menuentry" };
        let args = self
            .until_brace()
            .ok_or_else(|| syntax(line, format!("`{what}` without `{{`")))?;
        let (body, end) = self.block(&["}"], depth + 1)?;
        if end.is_none() {
            return Err(syntax(line, format!("`{what}` block without closing `}}`")));
        }
        Ok(Stmt::Menu {
            submenu,
            args,
            body,
            line,
        })
    }

    /// `function name { ... }`.
    fn skip_braced(&mut self, depth: usize) -> Result<Stmt, Error> {
        let line = self.line();
        self.pos += 1;
        if self.until_brace().is_none() {
            return Err(syntax(line, "`function` without `{`".into()));
        }
        match self.block(&["}"], depth + 1)? {
            (_, Some(_)) => Ok(Stmt::Skipped),
            (_, None) => Err(syntax(line, "`function` without closing `}`".into())),
        }
    }

    /// `while cond; do ...; done` and friends.
    fn skip_loop(&mut self, depth: usize) -> Result<Stmt, Error> {
        let line = self.line();
        self.pos += 1;
        let (_, end) = self.block(&["do"], depth + 1)?;
        if end.is_none() {
            return Err(syntax(line, "loop without `do`".into()));
        }
        match self.block(&["done"], depth + 1)? {
            (_, Some(_)) => Ok(Stmt::Skipped),
            (_, None) => Err(syntax(line, "loop without `done`".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer::tokenize;
    use super::*;

    fn p(text: &str) -> Result<Vec<Stmt>, Error> {
        parse(&tokenize(text))
    }

    #[test]
    fn structures() {
        let s = p(
            "if [ a ]; then x; elif b; then y; else z; fi\nmenuentry 'A' --id a {\n linux /k\n}\n",
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert!(
            matches!(&s[0], Stmt::If { branches, otherwise } if branches.len() == 2 && otherwise.len() == 1)
        );
        assert!(
            matches!(&s[1], Stmt::Menu { submenu: false, args, body, .. } if args.len() == 3 && body.len() == 1)
        );
        assert!(p("function f { a; }\nfor x in 1 2; do echo; done\n").is_ok());
    }

    #[test]
    fn errors_name_the_line() {
        let e = p("a\nif b; then\nc\n").unwrap_err();
        assert!(matches!(e, Error::Syntax { line: 2, .. }), "{e:?}");
        assert!(p("}\n").is_err());
        assert!(p("menuentry x\n").is_err());
        assert!(p("menuentry x {\n").is_err());
        assert!(p(&"if a; then ".repeat(1000)).is_err());
    }
}
