//! Tokenizer for GRUB's shell-like script language: words built from literal text and
//! `$variable` references, single and double quotes, backslash escapes, `\`-newline
//! continuation, `#` comments, `;` and newline separators, and `{` / `}` as words of
//! their own.

/// One piece of a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    /// Text taken as is.
    Lit(String),
    /// `$name` or `${name}`, expanded at evaluation time.
    Var(String),
}

/// A word: concatenated parts; `quoted` when any quoting was used (so an empty expansion
/// still counts as an argument).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Word {
    pub(crate) parts: Vec<Part>,
    pub(crate) quoted: bool,
}

impl Word {
    /// The word's text when it is a plain literal without quotes (keywords, braces).
    pub(crate) fn bare(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Lit(s)] if !self.quoted => Some(s),
            _ => None,
        }
    }

    fn push_char(&mut self, c: char) {
        if let Some(Part::Lit(s)) = self.parts.last_mut() {
            s.push(c);
        } else {
            self.parts.push(Part::Lit(c.to_string()));
        }
    }
}

/// A token with the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    Word(Word, usize),
    /// Newline or `;`.
    End(usize),
}

/// Split `text` into tokens. Never fails: unterminated quotes end at end of input.
pub(crate) fn tokenize(text: &str) -> Vec<Token> {
    let mut lx = Lexer {
        chars: text.chars().collect(),
        pos: 0,
        line: 1,
        out: Vec::new(),
    };
    lx.run();
    lx.out
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    out: Vec<Token>,
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn run(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\r' => {
                    self.pos += 1;
                }
                '\n' | ';' => {
                    self.out.push(Token::End(self.line));
                    self.next();
                }
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                }
                '\\' if self.chars.get(self.pos + 1) == Some(&'\n') => {
                    self.next();
                    self.next();
                }
                _ => {
                    let line = self.line;
                    let word = self.word();
                    self.out.push(Token::Word(word, line));
                }
            }
        }
    }

    /// One word, up to unquoted whitespace, newline or `;`.
    fn word(&mut self) -> Word {
        let mut w = Word::default();
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\r' | '\n' | ';' => break,
                '\\' => {
                    self.next();
                    match self.next() {
                        Some('\n') | None => {}
                        Some(c) => w.push_char(c),
                    }
                }
                '\'' => {
                    self.next();
                    w.quoted = true;
                    while let Some(c) = self.next() {
                        if c == '\'' {
                            break;
                        }
                        w.push_char(c);
                    }
                }
                '"' => {
                    self.next();
                    w.quoted = true;
                    self.double_quoted(&mut w);
                }
                '$' => {
                    self.next();
                    self.variable(&mut w);
                }
                _ => {
                    self.next();
                    w.push_char(c);
                }
            }
        }
        w
    }

    /// The inside of `"..."`: `$` expands, `\` escapes `$ " \` and newline.
    fn double_quoted(&mut self, w: &mut Word) {
        while let Some(c) = self.next() {
            match c {
                '"' => return,
                '\\' => match self.peek() {
                    Some('\n') => {
                        self.next();
                    }
                    Some(e @ ('$' | '"' | '\\')) => {
                        self.next();
                        w.push_char(e);
                    }
                    _ => w.push_char('\\'),
                },
                '$' => self.variable(w),
                _ => w.push_char(c),
            }
        }
    }

    /// After a `$`: `${name}`, `$name`, `$1`, `$?`; a lone `$` is literal.
    fn variable(&mut self, w: &mut Word) {
        match self.peek() {
            Some('{') => {
                let start = self.pos + 1;
                let Some(len) = self.chars[start..]
                    .iter()
                    .position(|&c| c == '}' || c == '\n')
                else {
                    w.push_char('$');
                    return;
                };
                if self.chars[start + len] != '}' {
                    w.push_char('$');
                    return;
                }
                let name: String = self.chars[start..start + len].iter().collect();
                self.pos = start + len + 1;
                w.parts.push(Part::Var(name));
            }
            Some(c @ ('?' | '#' | '*' | '@')) => {
                self.pos += 1;
                w.parts.push(Part::Var(c.to_string()));
            }
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                let mut name = String::new();
                while let Some(c) = self
                    .peek()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    name.push(c);
                    self.pos += 1;
                }
                w.parts.push(Part::Var(name));
            }
            _ => w.push_char('$'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<Vec<Part>> {
        tokenize(text)
            .into_iter()
            .filter_map(|t| match t {
                Token::Word(w, _) => Some(w.parts),
                Token::End(_) => None,
            })
            .map(|p| {
                p.into_iter()
                    .filter(|p| *p != Part::Lit(String::new()))
                    .collect()
            })
            .collect()
    }

    fn lit(s: &str) -> Part {
        Part::Lit(s.into())
    }

    #[test]
    fn quoting_and_variables() {
        assert_eq!(
            words("set a='x y' \"v=$b\" ${c}d e\\ f"),
            vec![
                vec![lit("set")],
                vec![lit("a=x y")],
                vec![lit("v="), Part::Var("b".into())],
                vec![Part::Var("c".into()), lit("d")],
                vec![lit("e f")],
            ]
        );
    }

    #[test]
    fn comments_continuations_separators() {
        let t = tokenize("a # comment ; x\nb \\\n c;d");
        let ends = t.iter().filter(|t| matches!(t, Token::End(_))).count();
        assert_eq!(ends, 2);
        assert_eq!(
            words("a # c\nb \\\n c"),
            vec![vec![lit("a")], vec![lit("b")], vec![lit("c")]]
        );
        assert_eq!(words("a#b"), vec![vec![lit("a#b")]]);
    }

    #[test]
    fn unterminated_input() {
        assert_eq!(words("'abc"), vec![vec![lit("abc")]]);
        assert_eq!(words("\"abc\\"), vec![vec![lit("abc\\")]]);
        assert_eq!(words("${abc"), vec![vec![lit("${abc")]]);
        assert_eq!(words("$"), vec![vec![lit("$")]]);
    }
}
