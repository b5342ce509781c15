//! `booleanExpr`: which steps must allow, combined with `&&`, `||`, `!`
//! and parentheses.
//!
//! `!` binds tightest; `&&` and `||` mixed must be parenthesized
//! (`a || (b && c)`), since Gloo's docs read an expression left to right
//! where the usual precedence reads `&&` first, and a config must not let
//! in more here than there. Operands are evaluated left to right and
//! `&&` / `||` short-circuit, so a step whose result cannot change the
//! answer is not run. The expression compiles to a tiny jump program over
//! one boolean register.
//!
//! Only the branches that decide contribute: a compound operand of `||` or
//! `!` runs between a [`Op::Save`] and an [`Op::Settle`], and the chain
//! puts the request and the allow back as they were at the save when the
//! operand turns out false (in `(key && opa) || public`, what `key` wrote
//! is undone when `opa` denies). A lone step needs no save: a step that
//! denies changes nothing.

use crate::Error;

/// One instruction of a compiled expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Run step `n` (or reuse its result) into the register.
    Run(usize),
    /// Negate the register.
    Not,
    /// Jump to the address when the register is false.
    JumpIfFalse(usize),
    /// Jump to the address when the register is true.
    JumpIfTrue(usize),
    /// Remember the run as it is: the start of an operand whose changes
    /// are undone if it turns out false.
    Save,
    /// The operand of the last `Save` ended: undo its changes if the
    /// register is false, and forget the save.
    Settle,
}

#[derive(Debug)]
enum Node {
    Step(usize),
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    Name(&'a str),
    And,
    Or,
    Not,
    Open,
    Close,
}

/// The deepest nesting accepted, so that a hostile expression cannot
/// exhaust the parser's stack.
const MAX_DEPTH: usize = 64;

/// The most step names an expression may hold (a step may be named more
/// than once): the compiler recurses once per operand.
const MAX_MENTIONS: usize = 256;

fn tokenize(src: &str) -> Result<Vec<(usize, Token<'_>)>, Error> {
    let mut tokens = Vec::new();
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let col = i + 1;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                tokens.push((col, Token::Open));
                i += 1;
            }
            b')' => {
                tokens.push((col, Token::Close));
                i += 1;
            }
            b'!' => {
                tokens.push((col, Token::Not));
                i += 1;
            }
            b'&' | b'|' => {
                if bytes.get(i + 1) != Some(&c) {
                    return Err(Error::config(format!(
                        "column {col}: expected '{0}{0}'",
                        c as char
                    )));
                }
                tokens.push((col, if c == b'&' { Token::And } else { Token::Or }));
                i += 2;
            }
            _ => {
                let start = i;
                while i < bytes.len() && !b" \t\n\r()!&|".contains(&bytes[i]) {
                    i += 1;
                }
                tokens.push((col, Token::Name(&src[start..i])));
            }
        }
    }
    Ok(tokens)
}

struct Parser<'a, 'n> {
    tokens: Vec<(usize, Token<'a>)>,
    pos: usize,
    names: &'n [String],
    end_col: usize,
}

impl<'a> Parser<'a, '_> {
    fn peek(&self) -> Option<&Token<'a>> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn col(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end_col, |(c, _)| *c)
    }

    fn error(&self, what: &str) -> Error {
        Error::config(format!("column {}: {what}", self.col()))
    }

    /// `||` of `&&`s; a mix of the two without parentheses is refused:
    /// Gloo's docs say an expression reads left to right, which would make
    /// `a || b && c` `(a || b) && c`, where precedence makes it
    /// `a || (b && c)`, which lets in more.
    fn or(&mut self, depth: usize) -> Result<Node, Error> {
        let (mut left, first_and) = self.and(depth)?;
        while self.peek() == Some(&Token::Or) {
            let at = self.col();
            self.pos += 1;
            let (right, and) = self.and(depth)?;
            if first_and || and {
                return Err(Error::config(format!(
                    "column {at}: `&&` and `||` without parentheses around one of them, which \
                     Gloo's docs read left to right and authchain would read `&&` first: add \
                     parentheses, as in `a || (b && c)` or `(a || b) && c`"
                )));
            }
            left = Node::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// `&&` of operands, and whether there was one `&&` at least.
    fn and(&mut self, depth: usize) -> Result<(Node, bool), Error> {
        let mut left = self.unary(depth)?;
        let mut any = false;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            let right = self.unary(depth)?;
            left = Node::And(Box::new(left), Box::new(right));
            any = true;
        }
        Ok((left, any))
    }

    fn unary(&mut self, depth: usize) -> Result<Node, Error> {
        if depth > MAX_DEPTH {
            return Err(self.error("expression nested too deeply"));
        }
        match self.peek().cloned() {
            Some(Token::Not) => {
                self.pos += 1;
                Ok(Node::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some(Token::Open) => {
                self.pos += 1;
                let inner = self.or(depth + 1)?;
                if self.peek() != Some(&Token::Close) {
                    return Err(self.error("expected ')'"));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Token::Name(name)) => {
                let Some(index) = self.names.iter().position(|n| n == name) else {
                    return Err(self.error(&format!(
                        "unknown step name '{name}' (steps: {})",
                        self.names.join(", ")
                    )));
                };
                self.pos += 1;
                Ok(Node::Step(index))
            }
            Some(_) => Err(self.error("expected a step name, '!' or '('")),
            None => Err(self.error("unexpected end of expression")),
        }
    }
}

fn compile(node: &Node, ops: &mut Vec<Op>, used: &mut [bool]) {
    match node {
        Node::Step(i) => {
            used[*i] = true;
            ops.push(Op::Run(*i));
        }
        Node::Not(inner) => {
            compile_undoable(inner, ops, used);
            ops.push(Op::Not);
        }
        Node::And(l, r) => binary(l, compile, Op::JumpIfFalse, r, compile, ops, used),
        Node::Or(l, r) => binary(l, compile_undoable, Op::JumpIfTrue, r, compile, ops, used),
    }
}

/// How an operand is compiled: [`compile`] or [`compile_undoable`].
type Compile = fn(&Node, &mut Vec<Op>, &mut [bool]);

/// `l`, then a `jump` over `r` when `l` settles the answer, then `r`.
fn binary(
    l: &Node,
    compile_l: Compile,
    jump: fn(usize) -> Op,
    r: &Node,
    compile_r: Compile,
    ops: &mut Vec<Op>,
    used: &mut [bool],
) {
    compile_l(l, ops, used);
    let at = ops.len();
    ops.push(jump(at)); // patched below, once r's end is known
    compile_r(r, ops, used);
    ops[at] = jump(ops.len());
}

/// Compiles an operand whose changes are undone when it turns out false
/// (that of `!`, the left one of `||`; the right one of `||` is its
/// parent's to undo).
fn compile_undoable(node: &Node, ops: &mut Vec<Op>, used: &mut [bool]) {
    match node {
        Node::Step(_) => compile(node, ops, used),
        // False only when each operand was, and each undoes its own: no
        // save of its own (a chain of `||` would otherwise save the run
        // once per operand before the first step runs).
        Node::Or(l, r) => binary(
            l,
            compile_undoable,
            Op::JumpIfTrue,
            r,
            compile_undoable,
            ops,
            used,
        ),
        Node::And(..) | Node::Not(_) => {
            ops.push(Op::Save);
            compile(node, ops, used);
            ops.push(Op::Settle);
        }
    }
}

/// Parses and compiles `src` over the step `names`. Every step must be
/// used: a step the expression never names would never run, which is a
/// config mistake.
pub(crate) fn compile_expr(src: &str, names: &[String]) -> Result<Vec<Op>, Error> {
    let tokens = tokenize(src)?;
    let mentions = tokens
        .iter()
        .filter(|(_, t)| matches!(t, Token::Name(_)))
        .count();
    if mentions > MAX_MENTIONS {
        return Err(Error::config(format!(
            "{mentions} step names: an expression holds at most {MAX_MENTIONS}"
        )));
    }
    let mut parser = Parser {
        tokens,
        pos: 0,
        names,
        end_col: src.len() + 1,
    };
    let root = parser.or(0)?;
    if parser.pos != parser.tokens.len() {
        return Err(parser.error("unexpected token"));
    }
    let mut ops = Vec::new();
    let mut used = vec![false; names.len()];
    compile(&root, &mut ops, &mut used);
    if let Some(unused) = used.iter().position(|u| !u) {
        return Err(Error::config(format!(
            "step '{}' is not used in the expression, so it would never run",
            names[unused]
        )));
    }
    Ok(ops)
}

/// What a compiled program needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Run step `step`, then call [`advance`] again at `resume` with its result.
    Run { step: usize, resume: usize },
    /// Save the run ([`Op::Save`]), then call [`advance`] again at `resume`
    /// with `register`.
    Save { resume: usize, register: bool },
    /// Settle the last save ([`Op::Settle`]) by `register`, then call
    /// [`advance`] again at `resume` with it.
    Settle { resume: usize, register: bool },
    /// The expression's value.
    Done(bool),
}

/// Runs the program from `pc` with the register at `acc` until it needs a
/// step's result or ends. The caller runs the steps, so the same program
/// drives an async chain and a plain test.
pub(crate) fn advance(ops: &[Op], mut pc: usize, mut acc: bool) -> Next {
    while let Some(op) = ops.get(pc) {
        pc += 1;
        match *op {
            Op::Run(step) => return Next::Run { step, resume: pc },
            Op::Save => {
                return Next::Save {
                    resume: pc,
                    register: acc,
                };
            }
            Op::Settle => {
                return Next::Settle {
                    resume: pc,
                    register: acc,
                };
            }
            Op::Not => acc = !acc,
            Op::JumpIfFalse(to) if !acc => pc = to,
            Op::JumpIfTrue(to) if acc => pc = to,
            Op::JumpIfFalse(_) | Op::JumpIfTrue(_) => {}
        }
    }
    Next::Done(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    /// Evaluates with fixed step results; returns the answer and which steps ran.
    fn run(expr: &str, steps: &[&str], results: &[bool]) -> (bool, Vec<usize>) {
        let ops = compile_expr(expr, &names(steps)).unwrap();
        let mut ran = Vec::new();
        let (mut pc, mut register) = (0, false);
        loop {
            match advance(&ops, pc, register) {
                Next::Run { step, resume } => {
                    ran.push(step);
                    (pc, register) = (resume, results[step]);
                }
                Next::Save {
                    resume,
                    register: r,
                }
                | Next::Settle {
                    resume,
                    register: r,
                } => {
                    (pc, register) = (resume, r);
                }
                Next::Done(answer) => return (answer, ran),
            }
        }
    }

    /// The program as text, one op per entry.
    fn program(expr: &str, steps: &[&str]) -> Vec<Op> {
        compile_expr(expr, &names(steps)).unwrap()
    }

    #[test]
    fn only_compound_operands_of_or_and_not_are_saved() {
        use Op::*;
        let s = ["a", "b", "c"];
        assert_eq!(
            program("a || (b && c)", &s),
            [Run(0), JumpIfTrue(5), Run(1), JumpIfFalse(5), Run(2)]
        );
        assert_eq!(
            program("(a && b) || c", &s),
            [
                Save,
                Run(0),
                JumpIfFalse(4),
                Run(1),
                Settle,
                JumpIfTrue(7),
                Run(2)
            ]
        );
        assert_eq!(
            program("!a && !(b || c)", &s),
            [
                Run(0),
                Not,
                JumpIfFalse(7),
                Run(1),
                JumpIfTrue(6),
                Run(2),
                Not
            ]
        );
        assert_eq!(
            program("!(a && b)", &s[..2]),
            [Save, Run(0), JumpIfFalse(4), Run(1), Settle, Not]
        );
        // A chain of `||` saves nothing: each lone step undoes itself.
        assert!(!program("a || b || c", &s).contains(&Save));
        assert_eq!(
            program("(a || b) || c", &s),
            [Run(0), JumpIfTrue(3), Run(1), JumpIfTrue(5), Run(2)]
        );
        let many = vec!["a"; 300].join(" || ");
        let error = compile_expr(&many, &names(&["a"])).unwrap_err();
        assert!(error.to_string().contains("at most 256"), "{error}");
    }

    #[test]
    fn truth_tables() {
        let s = ["a", "b"];
        for (a, b) in [(false, false), (false, true), (true, false), (true, true)] {
            assert_eq!(run("a && b", &s, &[a, b]).0, a && b);
            assert_eq!(run("a || b", &s, &[a, b]).0, a || b);
            assert_eq!(run("!a && b", &s, &[a, b]).0, !a && b);
            assert_eq!(run("!(a || b)", &s, &[a, b]).0, !(a || b));
        }
    }

    #[test]
    fn and_and_or_mixed_need_parentheses() {
        let s = ["a", "b", "c"];
        for mixed in [
            "a || b && c",
            "a && b || c",
            "!a && b || c",
            "(a || b && c)",
        ] {
            let error = compile_expr(mixed, &names(&s)).unwrap_err().to_string();
            assert!(error.contains("without parentheses"), "{mixed}: {error}");
        }
        assert!(
            compile_expr("a || b && c", &names(&s))
                .unwrap_err()
                .to_string()
                .contains("column 3")
        );
        // a || (b && c): with a true, nothing else runs.
        assert_eq!(
            run("a || (b && c)", &s, &[true, false, false]),
            (true, vec![0])
        );
        assert_eq!(
            run("a || (b && c)", &s, &[false, true, false]),
            (false, vec![0, 1, 2])
        );
        // (a || b) && c
        assert_eq!(
            run("(a || b) && c", &s, &[true, false, false]),
            (false, vec![0, 2])
        );
        // Either alone, or parenthesized, needs none.
        for fine in [
            "a && b && !c",
            "a || b || c",
            "(a && b) || c",
            "!(a || b) && c",
        ] {
            assert!(compile_expr(fine, &names(&s)).is_ok(), "{fine}");
        }
    }

    #[test]
    fn short_circuit_skips_steps() {
        let s = ["a", "b", "c"];
        assert_eq!(
            run("a && b && c", &s, &[false, true, true]),
            (false, vec![0])
        );
        assert_eq!(
            run("a || b || c", &s, &[false, true, false]),
            (true, vec![0, 1])
        );
        assert_eq!(run("!!a", &["a"], &[true]), (true, vec![0]));
    }

    #[test]
    fn errors_name_the_column() {
        let s = names(&["a", "b"]);
        let err = |e: &str| compile_expr(e, &s).unwrap_err().to_string();
        assert_eq!(
            err("a && x"),
            "column 6: unknown step name 'x' (steps: a, b)"
        );
        assert_eq!(err("a & b"), "column 3: expected '&&'");
        assert_eq!(err("(a && b"), "column 8: expected ')'");
        assert_eq!(err("a b"), "column 3: unexpected token");
        assert_eq!(err("a &&"), "column 5: unexpected end of expression");
        assert_eq!(err(""), "column 1: unexpected end of expression");
        assert_eq!(err("a && )"), "column 6: expected a step name, '!' or '('");
        assert_eq!(
            err("a"),
            "step 'b' is not used in the expression, so it would never run"
        );
        let deep = format!("{}a{} && b", "(".repeat(100), ")".repeat(100));
        assert!(err(&deep).contains("nested too deeply"));
        let deep = format!("{}a && b", "!".repeat(100));
        assert!(err(&deep).contains("nested too deeply"));
    }
}
