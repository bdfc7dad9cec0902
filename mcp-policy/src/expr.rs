//! Conditions: a small, typed expression language with CEL syntax, compiled once at load.
//!
//! It is a subset of [CEL](https://cel.dev): literals (`1`, `"a"`, `true`, `null`, `[..]`),
//! `&&`, `||`, `!`, `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `+`, `-`, field access (`a.b`),
//! indexing (`args["x"]`), the macro `has(args.x)`, the function `size(x)` and the methods
//! `startsWith`, `endsWith`, `contains`, `lowerAscii`. Variables:
//!
//! | variable | type |
//! |---|---|
//! | `identity.subject`, `.name`, `.email`, `.issuer`, `.kind` (`human`/`agent`/`anonymous`), `.auth_method` | string |
//! | `identity.teams`, `.roles`, `.scopes` | list of strings |
//! | `identity.authenticated` | bool |
//! | `client.name`, `client.version` | string |
//! | `origin.ip`, `origin.user_agent`, `origin.origin` | string |
//! | `time.hour`, `time.minute`, `time.weekday` (0 = Sunday), `time.unix` (UTC) | int |
//! | `feature.server`, `feature.name`, `feature.kind` | string |
//! | `method` | string |
//! | `args` | the tool call's arguments (dynamic; absent on lists) |
//!
//! Unknown variables and fields, type mismatches that can be seen statically, and syntax errors
//! are rejected at compile time with the byte offset of the problem. At run time an expression
//! never panics: a dynamic type mismatch makes it an error, which rules treat fail-closed.
//!
//! ```
//! use mcp_policy::expr::Expr;
//! let e = Expr::compile(r#""admin" in identity.roles && time.hour >= 9"#).unwrap();
//! assert!(!e.uses_args());
//! assert!(Expr::compile("identity.nope").is_err());
//! ```

use std::{borrow::Cow, fmt, net::SocketAddr, sync::Arc};

use mcp_gateway_core::{Identity, JsonObject, Origin, SessionInfo, identity::AuthMethod};
use serde_json::Value;

/// A compile error: what is wrong and where (a byte offset into the expression).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at offset {offset}: {message}")]
pub struct CompileError {
    /// Byte offset into the expression text.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, CompileError> {
    Err(CompileError {
        offset,
        message: message.into(),
    })
}

// === lexer ===

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    Str(String),
    Ident(String),
    Op(&'static str),
    Eof,
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, CompileError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let n: i64 = match src[start..i].parse() {
                Ok(n) => n,
                Err(_) => return err(start, "integer literal out of range"),
            };
            out.push((Tok::Int(n), start));
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Ident(src[start..i].to_string()), start));
            continue;
        }
        if c == b'"' || c == b'\'' {
            let quote = c;
            i += 1;
            let mut s = String::new();
            loop {
                let Some(ch) = src[i..].chars().next() else {
                    return err(start, "unterminated string literal");
                };
                i += ch.len_utf8();
                if ch as u32 == quote as u32 {
                    break;
                }
                if ch == '\\' {
                    let Some(esc) = src[i..].chars().next() else {
                        return err(start, "unterminated string literal");
                    };
                    i += esc.len_utf8();
                    s.push(match esc {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '\\' => '\\',
                        '"' => '"',
                        '\'' => '\'',
                        other => return err(i - 2, format!("unknown escape `\\{other}`")),
                    });
                } else {
                    s.push(ch);
                }
            }
            out.push((Tok::Str(s), start));
            continue;
        }
        const OPS: [&str; 20] = [
            "&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "(", ")", "[", "]", ".", ",", "+",
            "-", "?", ":", "=",
        ];
        let Some(op) = OPS.iter().find(|op| src[i..].starts_with(**op)) else {
            let ch = src[i..].chars().next().unwrap_or('?');
            return err(i, format!("unexpected character `{ch}`"));
        };
        if *op == "=" {
            return err(i, "`=` is not an operator here; use `==` to compare");
        }
        if *op == "?" || *op == ":" {
            return err(i, "the conditional operator `?:` is not supported");
        }
        i += op.len();
        out.push((Tok::Op(op), start));
    }
    out.push((Tok::Eof, src.len()));
    Ok(out)
}

// === AST ===

/// Static types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Bool,
    Int,
    Str,
    List,
    Null,
    /// Known only at run time (`args`).
    Dyn,
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ty::Bool => "bool",
            Ty::Int => "int",
            Ty::Str => "string",
            Ty::List => "list",
            Ty::Null => "null",
            Ty::Dyn => "dyn",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Subject,
    Name,
    Email,
    Issuer,
    Kind,
    AuthMethod,
    Teams,
    Roles,
    Scopes,
    Authenticated,
    ClientName,
    ClientVersion,
    OriginIp,
    OriginUserAgent,
    OriginOrigin,
    Hour,
    Minute,
    Weekday,
    Unix,
    FeatureServer,
    FeatureName,
    FeatureKind,
    Method,
    Args,
}

impl Var {
    fn ty(self) -> Ty {
        match self {
            Var::Teams | Var::Roles | Var::Scopes => Ty::List,
            Var::Authenticated => Ty::Bool,
            Var::Hour | Var::Minute | Var::Weekday | Var::Unix => Ty::Int,
            Var::Args => Ty::Dyn,
            _ => Ty::Str,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    And,
    Or,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Add,
    Sub,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrMethod {
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Debug, Clone)]
enum Node {
    Lit(Lit),
    List(Vec<Node>),
    Var(Var),
    /// Dynamic field/index access into a JSON value.
    Index(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Neg(Box<Node>),
    Bin(BinOp, Box<Node>, Box<Node>),
    StrMethod(StrMethod, Box<Node>, Box<Node>),
    Lower(Box<Node>),
    Size(Box<Node>),
    /// `has(x.f)`: whether the JSON object `x` has field `f`.
    Has(Box<Node>, String),
}

#[derive(Debug, Clone)]
enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Str(Arc<str>),
}

// === parser ===

struct Parser<'s> {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    uses_args: bool,
    depth: usize,
    _src: &'s str,
}

const MAX_DEPTH: usize = 64;

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].0
    }
    fn offset(&self) -> usize {
        self.toks[self.pos.min(self.toks.len() - 1)].1
    }
    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }
    fn eat(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Tok::Op(o) if *o == op) {
            self.bump();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, op: &str) -> Result<(), CompileError> {
        if self.eat(op) {
            Ok(())
        } else {
            err(
                self.offset(),
                format!("expected `{op}`, found {}", describe(self.peek())),
            )
        }
    }

    fn enter(&mut self) -> Result<(), CompileError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(self.offset(), "expression nested too deeply");
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<(Node, Ty), CompileError> {
        self.enter()?;
        let r = self.or();
        self.depth -= 1;
        r
    }

    fn or(&mut self) -> Result<(Node, Ty), CompileError> {
        let mut lhs = self.and()?;
        loop {
            let at = self.offset();
            if !self.eat("||") {
                return Ok(lhs);
            }
            let rhs = self.and()?;
            lhs = logic(BinOp::Or, lhs, rhs, at)?;
        }
    }

    fn and(&mut self) -> Result<(Node, Ty), CompileError> {
        let mut lhs = self.cmp()?;
        loop {
            let at = self.offset();
            if !self.eat("&&") {
                return Ok(lhs);
            }
            let rhs = self.cmp()?;
            lhs = logic(BinOp::And, lhs, rhs, at)?;
        }
    }

    fn cmp(&mut self) -> Result<(Node, Ty), CompileError> {
        let lhs = self.add()?;
        let at = self.offset();
        let op = match self.peek() {
            Tok::Op("==") => BinOp::Eq,
            Tok::Op("!=") => BinOp::Ne,
            Tok::Op("<") => BinOp::Lt,
            Tok::Op("<=") => BinOp::Le,
            Tok::Op(">") => BinOp::Gt,
            Tok::Op(">=") => BinOp::Ge,
            Tok::Ident(i) if i == "in" => BinOp::In,
            _ => return Ok(lhs),
        };
        self.bump();
        let rhs = self.add()?;
        let (l, lt) = lhs;
        let (r, rt) = rhs;
        match op {
            BinOp::Eq | BinOp::Ne => {
                if lt != rt && ![lt, rt].iter().any(|t| matches!(t, Ty::Dyn | Ty::Null)) {
                    return err(at, format!("cannot compare {lt} with {rt}"));
                }
            }
            BinOp::In => {
                if !matches!(rt, Ty::List | Ty::Dyn) {
                    return err(
                        at,
                        format!("right side of `in` must be a list or map, not {rt}"),
                    );
                }
            }
            _ => {
                let ok = |t: Ty| matches!(t, Ty::Int | Ty::Str | Ty::Dyn);
                if !ok(lt) || !ok(rt) || (lt != rt && lt != Ty::Dyn && rt != Ty::Dyn) {
                    return err(at, format!("cannot order {lt} and {rt}"));
                }
            }
        }
        if matches!(self.peek(), Tok::Op("==" | "!=" | "<" | "<=" | ">" | ">="))
            || matches!(self.peek(), Tok::Ident(i) if i == "in")
        {
            return err(self.offset(), "comparisons do not chain; use `&&`");
        }
        Ok((Node::Bin(op, Box::new(l), Box::new(r)), Ty::Bool))
    }

    fn add(&mut self) -> Result<(Node, Ty), CompileError> {
        let mut lhs = self.unary()?;
        loop {
            let at = self.offset();
            let op = if self.eat("+") {
                BinOp::Add
            } else if self.eat("-") {
                BinOp::Sub
            } else {
                return Ok(lhs);
            };
            let (r, rt) = self.unary()?;
            let (l, lt) = lhs;
            let ty = match (op, lt, rt) {
                (_, Ty::Int, Ty::Int) => Ty::Int,
                (BinOp::Add, Ty::Str, Ty::Str) => Ty::Str,
                (_, Ty::Dyn, _) | (_, _, Ty::Dyn) => Ty::Dyn,
                _ => {
                    return err(
                        at,
                        format!(
                            "cannot apply `{}` to {lt} and {rt}",
                            if op == BinOp::Add { "+" } else { "-" }
                        ),
                    );
                }
            };
            lhs = (Node::Bin(op, Box::new(l), Box::new(r)), ty);
        }
    }

    fn unary(&mut self) -> Result<(Node, Ty), CompileError> {
        let at = self.offset();
        if self.eat("!") {
            self.enter()?;
            let (n, t) = self.unary()?;
            self.depth -= 1;
            if !matches!(t, Ty::Bool | Ty::Dyn) {
                return err(at, format!("`!` needs a bool, not {t}"));
            }
            return Ok((Node::Not(Box::new(n)), Ty::Bool));
        }
        if self.eat("-") {
            self.enter()?;
            let (n, t) = self.unary()?;
            self.depth -= 1;
            if !matches!(t, Ty::Int | Ty::Dyn) {
                return err(at, format!("`-` needs an int, not {t}"));
            }
            return Ok((Node::Neg(Box::new(n)), Ty::Int));
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<(Node, Ty), CompileError> {
        let (mut node, mut ty) = self.primary()?;
        loop {
            let at = self.offset();
            if self.eat(".") {
                let Tok::Ident(field) = self.bump() else {
                    return err(at + 1, "expected a field or method name after `.`");
                };
                if self.eat("(") {
                    let method = match field.as_str() {
                        "startsWith" => Some(StrMethod::StartsWith),
                        "endsWith" => Some(StrMethod::EndsWith),
                        "contains" => Some(StrMethod::Contains),
                        "lowerAscii" => None,
                        other => return err(at + 1, format!("unknown method `{other}`")),
                    };
                    if !matches!(ty, Ty::Str | Ty::Dyn) {
                        return err(
                            at + 1,
                            format!("`{field}` needs a string receiver, not {ty}"),
                        );
                    }
                    match method {
                        Some(m) => {
                            let (arg, at_ty) = self.expr()?;
                            if !matches!(at_ty, Ty::Str | Ty::Dyn) {
                                return err(
                                    at + 1,
                                    format!("`{field}` takes a string, not {at_ty}"),
                                );
                            }
                            self.expect(")")?;
                            node = Node::StrMethod(m, Box::new(node), Box::new(arg));
                            ty = Ty::Bool;
                        }
                        None => {
                            self.expect(")")?;
                            node = Node::Lower(Box::new(node));
                            ty = Ty::Str;
                        }
                    }
                } else {
                    if ty != Ty::Dyn {
                        return err(at + 1, format!("{ty} has no field `{field}`"));
                    }
                    node = Node::Index(Box::new(node), Box::new(Node::Lit(Lit::Str(field.into()))));
                }
                continue;
            }
            if self.eat("[") {
                let (idx, it) = self.expr()?;
                self.expect("]")?;
                if !matches!(ty, Ty::Dyn | Ty::List) {
                    return err(at, format!("cannot index {ty}"));
                }
                if !matches!(it, Ty::Str | Ty::Int | Ty::Dyn) {
                    return err(at, format!("an index must be a string or int, not {it}"));
                }
                node = Node::Index(Box::new(node), Box::new(idx));
                ty = Ty::Dyn;
                continue;
            }
            return Ok((node, ty));
        }
    }

    fn primary(&mut self) -> Result<(Node, Ty), CompileError> {
        let at = self.offset();
        match self.bump() {
            Tok::Int(n) => Ok((Node::Lit(Lit::Int(n)), Ty::Int)),
            Tok::Str(s) => Ok((Node::Lit(Lit::Str(s.into())), Ty::Str)),
            Tok::Op("(") => {
                let e = self.expr()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Op("[") => {
                let mut items = Vec::new();
                if !self.eat("]") {
                    loop {
                        items.push(self.expr()?.0);
                        if self.eat("]") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                Ok((Node::List(items), Ty::List))
            }
            Tok::Ident(id) => match id.as_str() {
                "true" => Ok((Node::Lit(Lit::Bool(true)), Ty::Bool)),
                "false" => Ok((Node::Lit(Lit::Bool(false)), Ty::Bool)),
                "null" => Ok((Node::Lit(Lit::Null), Ty::Null)),
                "size" => {
                    self.expect("(")?;
                    let (n, t) = self.expr()?;
                    self.expect(")")?;
                    if !matches!(t, Ty::Str | Ty::List | Ty::Dyn) {
                        return err(at, format!("`size` needs a string, list or map, not {t}"));
                    }
                    Ok((Node::Size(Box::new(n)), Ty::Int))
                }
                "has" => {
                    self.expect("(")?;
                    let (n, _) = self.postfix()?;
                    self.expect(")")?;
                    match n {
                        Node::Index(obj, field) => match *field {
                            Node::Lit(Lit::Str(f)) => Ok((Node::Has(obj, f.to_string()), Ty::Bool)),
                            _ => err(at, "`has` needs a field selection like `has(args.path)`"),
                        },
                        _ => err(at, "`has` needs a field selection like `has(args.path)`"),
                    }
                }
                "args" => {
                    self.uses_args = true;
                    Ok((Node::Var(Var::Args), Ty::Dyn))
                }
                "method" => Ok((Node::Var(Var::Method), Ty::Str)),
                "identity" | "client" | "origin" | "time" | "feature" => {
                    let fat = self.offset();
                    if !self.eat(".") {
                        return err(
                            fat,
                            format!(
                                "`{id}` is an object; select a field like `{id}.{}`",
                                fields(&id)[0]
                            ),
                        );
                    }
                    let Tok::Ident(field) = self.bump() else {
                        return err(fat + 1, "expected a field name after `.`");
                    };
                    let var = match (id.as_str(), field.as_str()) {
                        ("identity", "subject") => Var::Subject,
                        ("identity", "name") => Var::Name,
                        ("identity", "email") => Var::Email,
                        ("identity", "issuer") => Var::Issuer,
                        ("identity", "kind") => Var::Kind,
                        ("identity", "auth_method") => Var::AuthMethod,
                        ("identity", "teams") => Var::Teams,
                        ("identity", "roles") => Var::Roles,
                        ("identity", "scopes") => Var::Scopes,
                        ("identity", "authenticated") => Var::Authenticated,
                        ("client", "name") => Var::ClientName,
                        ("client", "version") => Var::ClientVersion,
                        ("origin", "ip") => Var::OriginIp,
                        ("origin", "user_agent") => Var::OriginUserAgent,
                        ("origin", "origin") => Var::OriginOrigin,
                        ("time", "hour") => Var::Hour,
                        ("time", "minute") => Var::Minute,
                        ("time", "weekday") => Var::Weekday,
                        ("time", "unix") => Var::Unix,
                        ("feature", "server") => Var::FeatureServer,
                        ("feature", "name") => Var::FeatureName,
                        ("feature", "kind") => Var::FeatureKind,
                        _ => {
                            return err(
                                fat + 1,
                                format!(
                                    "unknown field `{id}.{field}` (known: {})",
                                    fields(&id).join(", ")
                                ),
                            );
                        }
                    };
                    Ok((Node::Var(var), var.ty()))
                }
                other => err(
                    at,
                    format!(
                        "unknown variable `{other}` (known: identity, client, origin, time, feature, method, args)"
                    ),
                ),
            },
            Tok::Eof => err(at, "unexpected end of expression"),
            t => err(at, format!("unexpected {}", describe(&t))),
        }
    }
}

fn fields(obj: &str) -> &'static [&'static str] {
    match obj {
        "identity" => &[
            "subject",
            "name",
            "email",
            "issuer",
            "kind",
            "auth_method",
            "teams",
            "roles",
            "scopes",
            "authenticated",
        ],
        "client" => &["name", "version"],
        "origin" => &["ip", "user_agent", "origin"],
        "time" => &["hour", "minute", "weekday", "unix"],
        _ => &["server", "name", "kind"],
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Int(n) => format!("number `{n}`"),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Ident(i) => format!("`{i}`"),
        Tok::Op(o) => format!("`{o}`"),
        Tok::Eof => "end of expression".into(),
    }
}

fn logic(op: BinOp, l: (Node, Ty), r: (Node, Ty), at: usize) -> Result<(Node, Ty), CompileError> {
    for t in [l.1, r.1] {
        if !matches!(t, Ty::Bool | Ty::Dyn) {
            return err(
                at,
                format!(
                    "`{}` needs bool operands, not {t}",
                    if op == BinOp::And { "&&" } else { "||" }
                ),
            );
        }
    }
    Ok((Node::Bin(op, Box::new(l.0), Box::new(r.0)), Ty::Bool))
}

// === Expr ===

/// A compiled condition.
#[derive(Clone)]
pub struct Expr {
    root: Arc<Node>,
    source: Arc<str>,
    uses_args: bool,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

/// Expressions longer than this are rejected.
pub const MAX_EXPR_LEN: usize = 4096;

impl Expr {
    /// Compiles an expression that must produce a bool.
    pub fn compile(src: &str) -> Result<Self, CompileError> {
        if src.len() > MAX_EXPR_LEN {
            return err(
                MAX_EXPR_LEN,
                format!("expression longer than {MAX_EXPR_LEN} bytes"),
            );
        }
        let toks = lex(src)?;
        let mut p = Parser {
            toks,
            pos: 0,
            uses_args: false,
            depth: 0,
            _src: src,
        };
        let (root, ty) = p.expr()?;
        if !matches!(p.peek(), Tok::Eof) {
            return err(
                p.offset(),
                format!("unexpected {} after the expression", describe(p.peek())),
            );
        }
        if !matches!(ty, Ty::Bool | Ty::Dyn) {
            return err(0, format!("a condition must be a bool, this is {ty}"));
        }
        Ok(Self {
            root: Arc::new(root),
            source: src.into(),
            uses_args: p.uses_args,
        })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the expression reads `args` (so it can be decided only on a call).
    pub fn uses_args(&self) -> bool {
        self.uses_args
    }

    /// Evaluates; `Err` on a dynamic type error (callers treat it fail-closed).
    pub fn eval(&self, env: &Env<'_>) -> Result<bool, EvalError> {
        match eval(&self.root, env, 0)? {
            Val::Bool(b) => Ok(b),
            Val::Json(Value::Bool(b)) => Ok(*b),
            _ => Err(EvalError("condition did not produce a bool")),
        }
    }
}

/// A run-time evaluation error (a dynamic type mismatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(&'static str);

/// What a condition can see.
#[derive(Debug, Clone, Default)]
pub struct Env<'a> {
    /// The caller.
    pub identity: Option<&'a Identity>,
    /// The client's session.
    pub session: Option<&'a SessionInfo>,
    /// How the message arrived.
    pub origin: Option<&'a Origin>,
    /// Seconds since the Unix epoch (UTC).
    pub now_unix: i64,
    /// The feature's server.
    pub server: &'a str,
    /// The feature's name (upstream name or URI).
    pub name: &'a str,
    /// The feature kind (`tool`, `prompt`, ...).
    pub kind: &'a str,
    /// The method.
    pub method: &'a str,
    /// Tool-call arguments (`None` on lists).
    pub args: Option<&'a JsonObject>,
}

#[derive(Debug, Clone)]
enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Str(Cow<'a, str>),
    StrList(&'a [String]),
    List(Vec<Val<'a>>),
    Json(&'a Value),
    Map(&'a JsonObject),
}

fn norm(v: Val<'_>) -> Val<'_> {
    match v {
        Val::Json(Value::Null) => Val::Null,
        Val::Json(Value::Bool(b)) => Val::Bool(*b),
        Val::Json(Value::String(s)) => Val::Str(Cow::Borrowed(s)),
        Val::Json(Value::Number(n)) => match n.as_i64() {
            Some(i) => Val::Int(i),
            None => Val::Null,
        },
        other => other,
    }
}

const TYPE: EvalError = EvalError("type mismatch");

fn s<'a>(x: &'a Option<String>) -> Val<'a> {
    Val::Str(Cow::Borrowed(x.as_deref().unwrap_or("")))
}

fn var<'a>(v: Var, env: &Env<'a>) -> Val<'a> {
    let id = env.identity;
    let hms = || env.now_unix.rem_euclid(86_400);
    match v {
        Var::Subject => Val::Str(Cow::Borrowed(id.map(|i| &*i.subject).unwrap_or(""))),
        Var::Name => id.map_or(Val::Str("".into()), |i| s(&i.name)),
        Var::Email => id.map_or(Val::Str("".into()), |i| s(&i.email)),
        Var::Issuer => id.map_or(Val::Str("".into()), |i| s(&i.issuer)),
        Var::Kind => Val::Str(Cow::Borrowed(match id {
            None => "anonymous",
            Some(i) if i.auth_method == AuthMethod::Anonymous => "anonymous",
            Some(i) => match i.kind {
                mcp_gateway_core::identity::PrincipalKind::Human => "human",
                mcp_gateway_core::identity::PrincipalKind::Agent => "agent",
            },
        })),
        Var::AuthMethod => Val::Str(Cow::Borrowed(match id.map(|i| &i.auth_method) {
            None | Some(AuthMethod::Anonymous) => "anonymous",
            Some(AuthMethod::Jwt) => "jwt",
            Some(AuthMethod::ApiKey) => "api_key",
            Some(AuthMethod::Other(o)) => o.as_str(),
        })),
        Var::Teams => Val::StrList(id.map_or(&[][..], |i| &i.teams)),
        Var::Roles => Val::StrList(id.map_or(&[][..], |i| &i.roles)),
        Var::Scopes => Val::StrList(id.map_or(&[][..], |i| &i.scopes)),
        Var::Authenticated => Val::Bool(id.is_some_and(|i| i.auth_method != AuthMethod::Anonymous)),
        Var::ClientName => Val::Str(Cow::Borrowed(
            env.session.and_then(|s| s.client_name()).unwrap_or(""),
        )),
        Var::ClientVersion => Val::Str(Cow::Borrowed(
            env.session.and_then(|s| s.client_version()).unwrap_or(""),
        )),
        Var::OriginIp => Val::Str(Cow::Owned(
            env.origin
                .and_then(|o| o.remote_addr)
                .map(|a: SocketAddr| a.ip().to_string())
                .unwrap_or_default(),
        )),
        Var::OriginUserAgent => Val::Str(Cow::Borrowed(
            env.origin
                .and_then(|o| o.user_agent.as_deref())
                .unwrap_or(""),
        )),
        Var::OriginOrigin => Val::Str(Cow::Borrowed(
            env.origin.and_then(|o| o.origin.as_deref()).unwrap_or(""),
        )),
        Var::Hour => Val::Int(hms() / 3600),
        Var::Minute => Val::Int(hms() % 3600 / 60),
        // 1970-01-01 was a Thursday (4).
        Var::Weekday => Val::Int((env.now_unix.div_euclid(86_400) + 4).rem_euclid(7)),
        Var::Unix => Val::Int(env.now_unix),
        Var::FeatureServer => Val::Str(Cow::Borrowed(env.server)),
        Var::FeatureName => Val::Str(Cow::Borrowed(env.name)),
        Var::FeatureKind => Val::Str(Cow::Borrowed(env.kind)),
        Var::Method => Val::Str(Cow::Borrowed(env.method)),
        Var::Args => env.args.map_or(Val::Null, Val::Map),
    }
}

fn eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Int(x), Val::Int(y)) => x == y,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Json(x), Val::Json(y)) => x == y,
        _ => false,
    }
}

fn eval<'a>(n: &'a Node, env: &Env<'a>, depth: usize) -> Result<Val<'a>, EvalError> {
    if depth > MAX_DEPTH * 2 {
        return Err(EvalError("expression too deep"));
    }
    let d = depth + 1;
    Ok(match n {
        Node::Lit(Lit::Null) => Val::Null,
        Node::Lit(Lit::Bool(b)) => Val::Bool(*b),
        Node::Lit(Lit::Int(i)) => Val::Int(*i),
        Node::Lit(Lit::Str(s)) => Val::Str(Cow::Borrowed(s)),
        Node::List(items) => Val::List(
            items
                .iter()
                .map(|i| eval(i, env, d).map(norm))
                .collect::<Result<_, _>>()?,
        ),
        Node::Var(v) => var(*v, env),
        Node::Index(obj, idx) => {
            let o = eval(obj, env, d)?;
            let i = norm(eval(idx, env, d)?);
            match (o, i) {
                (Val::Map(m), Val::Str(k)) => m.get(k.as_ref()).map_or(Val::Null, Val::Json),
                (Val::Json(Value::Object(m)), Val::Str(k)) => {
                    m.get(k.as_ref()).map_or(Val::Null, Val::Json)
                }
                (Val::Json(Value::Array(a)), Val::Int(k)) => usize::try_from(k)
                    .ok()
                    .and_then(|k| a.get(k))
                    .map_or(Val::Null, Val::Json),
                (Val::StrList(a), Val::Int(k)) => usize::try_from(k)
                    .ok()
                    .and_then(|k| a.get(k))
                    .map_or(Val::Null, |s| Val::Str(Cow::Borrowed(s))),
                (Val::Null, _) => Val::Null,
                _ => return Err(TYPE),
            }
        }
        Node::Not(x) => match norm(eval(x, env, d)?) {
            Val::Bool(b) => Val::Bool(!b),
            _ => return Err(TYPE),
        },
        Node::Neg(x) => match norm(eval(x, env, d)?) {
            Val::Int(i) => Val::Int(i.checked_neg().ok_or(EvalError("overflow"))?),
            _ => return Err(TYPE),
        },
        Node::Bin(BinOp::And, l, r) => {
            // CEL's commutative short-circuit: false wins over errors.
            let lv = norm(eval(l, env, d)?);
            match lv {
                Val::Bool(false) => Val::Bool(false),
                Val::Bool(true) => match norm(eval(r, env, d)?) {
                    Val::Bool(b) => Val::Bool(b),
                    _ => return Err(TYPE),
                },
                _ => return Err(TYPE),
            }
        }
        Node::Bin(BinOp::Or, l, r) => match norm(eval(l, env, d)?) {
            Val::Bool(true) => Val::Bool(true),
            Val::Bool(false) => match norm(eval(r, env, d)?) {
                Val::Bool(b) => Val::Bool(b),
                _ => return Err(TYPE),
            },
            _ => return Err(TYPE),
        },
        Node::Bin(op, l, r) => {
            let lv = norm(eval(l, env, d)?);
            let rv = norm(eval(r, env, d)?);
            match op {
                BinOp::Eq => Val::Bool(eq(&lv, &rv)),
                BinOp::Ne => Val::Bool(!eq(&lv, &rv)),
                BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                    let ord = match (&lv, &rv) {
                        (Val::Int(a), Val::Int(b)) => a.cmp(b),
                        (Val::Str(a), Val::Str(b)) => a.cmp(b),
                        _ => return Err(TYPE),
                    };
                    Val::Bool(match op {
                        BinOp::Lt => ord.is_lt(),
                        BinOp::Le => ord.is_le(),
                        BinOp::Gt => ord.is_gt(),
                        _ => ord.is_ge(),
                    })
                }
                BinOp::In => Val::Bool(match rv {
                    Val::StrList(list) => match &lv {
                        Val::Str(x) => list.iter().any(|s| s == x),
                        _ => false,
                    },
                    Val::List(items) => items.iter().any(|i| eq(&lv, i)),
                    Val::Json(Value::Array(items)) => {
                        items.iter().any(|i| eq(&lv, &norm(Val::Json(i))))
                    }
                    Val::Map(m) => matches!(&lv, Val::Str(k) if m.contains_key(k.as_ref())),
                    Val::Json(Value::Object(m)) => {
                        matches!(&lv, Val::Str(k) if m.contains_key(k.as_ref()))
                    }
                    Val::Null => false,
                    _ => return Err(TYPE),
                }),
                BinOp::Add => match (lv, rv) {
                    (Val::Int(a), Val::Int(b)) => {
                        Val::Int(a.checked_add(b).ok_or(EvalError("overflow"))?)
                    }
                    (Val::Str(a), Val::Str(b)) => Val::Str(Cow::Owned(format!("{a}{b}"))),
                    _ => return Err(TYPE),
                },
                BinOp::Sub => match (lv, rv) {
                    (Val::Int(a), Val::Int(b)) => {
                        Val::Int(a.checked_sub(b).ok_or(EvalError("overflow"))?)
                    }
                    _ => return Err(TYPE),
                },
                BinOp::And | BinOp::Or => return Err(TYPE),
            }
        }
        Node::StrMethod(m, recv, arg) => {
            let (Val::Str(r), Val::Str(a)) = (norm(eval(recv, env, d)?), norm(eval(arg, env, d)?))
            else {
                return Err(TYPE);
            };
            Val::Bool(match m {
                StrMethod::StartsWith => r.starts_with(a.as_ref()),
                StrMethod::EndsWith => r.ends_with(a.as_ref()),
                StrMethod::Contains => r.contains(a.as_ref()),
            })
        }
        Node::Lower(x) => match norm(eval(x, env, d)?) {
            Val::Str(s) => Val::Str(Cow::Owned(s.to_ascii_lowercase())),
            _ => return Err(TYPE),
        },
        Node::Size(x) => Val::Int(match norm(eval(x, env, d)?) {
            Val::Str(s) => s.chars().count() as i64,
            Val::StrList(l) => l.len() as i64,
            Val::List(l) => l.len() as i64,
            Val::Map(m) => m.len() as i64,
            Val::Json(Value::Array(a)) => a.len() as i64,
            Val::Json(Value::Object(o)) => o.len() as i64,
            _ => return Err(TYPE),
        }),
        Node::Has(obj, field) => Val::Bool(match norm(eval(obj, env, d)?) {
            Val::Map(m) => m.contains_key(field),
            Val::Json(Value::Object(m)) => m.contains_key(field),
            Val::Null => false,
            _ => return Err(TYPE),
        }),
    })
}
