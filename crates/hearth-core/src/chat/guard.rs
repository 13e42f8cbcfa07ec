//! A chat template compiled through minijinja's machinery API (parser and code generator)
//! rather than by an `Environment`, so that what it runs can be bounded and its instructions
//! rewritten: raw text is written through the formatter, like any value, which counts the
//! output against its cap as it is written.
//!
//! Before compiling, [`check_source`] and the compiler's constant folding are bounded (tags,
//! blocks, constant lists): minijinja parses, compiles and drops a long chain of operators by
//! recursing once per link, and folds constants without fuel.

use std::collections::BTreeMap;

use minijinja::machinery::{self, ast, CodeGenerator, Instruction, Instructions, Token};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, Error, Value};

use super::budget::over_budget;

/// Most tokens of one `{{ ... }}` or `{% ... %}` tag: minijinja parses a chain of operators or
/// filters into a tree as deep as the chain is long. Real templates use a few dozen.
pub(crate) const MAX_TAG_TOKENS: usize = 500;

/// Deepest nesting of blocks, counting each `{% elif %}` as one more level (minijinja nests
/// an `elif` in the `else` of the `if` before it). Real templates nest a handful.
pub(crate) const MAX_BLOCK_DEPTH: usize = 100;

/// Refuses a source whose parse tree would be too deep (see [`MAX_TAG_TOKENS`] and
/// [`MAX_BLOCK_DEPTH`]). A source the lexer rejects passes: the parser reports it.
pub(crate) fn check_source(source: &str, syntax: &SyntaxConfig) -> Result<(), String> {
    const OPENERS: [&str; 8] = [
        "for",
        "if",
        "macro",
        "call",
        "filter",
        "with",
        "autoescape",
        "block",
    ];
    /// The tag being read.
    struct Tag<'a> {
        tokens: usize,
        block: bool,
        keyword: Option<&'a str>,
        assigns: bool,
    }
    // One entry per open block: the levels it adds (1, plus one per `elif`).
    let mut open: Vec<usize> = Vec::new();
    let mut tag: Option<Tag> = None;
    for token in machinery::tokenize(source, false, syntax.clone()) {
        let Ok((token, _)) = token else {
            return Ok(());
        };
        match token {
            Token::VariableStart | Token::BlockStart => {
                tag = Some(Tag {
                    tokens: 0,
                    block: matches!(token, Token::BlockStart),
                    keyword: None,
                    assigns: false,
                })
            }
            Token::VariableEnd => tag = None,
            Token::BlockEnd => {
                let Some(Tag {
                    keyword: Some(keyword),
                    assigns,
                    ..
                }) = tag.take()
                else {
                    continue;
                };
                if OPENERS.contains(&keyword) || (keyword == "set" && !assigns) {
                    open.push(1);
                } else if keyword == "elif" {
                    if let Some(levels) = open.last_mut() {
                        *levels += 1;
                    }
                } else if keyword.starts_with("end") {
                    open.pop();
                }
                if open.iter().sum::<usize>() > MAX_BLOCK_DEPTH {
                    return Err(format!(
                        "its blocks are nested deeper than {MAX_BLOCK_DEPTH} levels"
                    ));
                }
            }
            token => {
                let Some(tag) = &mut tag else {
                    continue;
                };
                tag.tokens += 1;
                if tag.tokens > MAX_TAG_TOKENS {
                    return Err(format!("a tag is longer than {MAX_TAG_TOKENS} tokens"));
                }
                match token {
                    Token::Ident(name) if tag.block && tag.keyword.is_none() => {
                        tag.keyword = Some(name)
                    }
                    Token::Assign => tag.assigns = true,
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Longest constant list the compiler may fold: minijinja folds constant expressions while it
/// compiles, without fuel, and a lazy `[1] * 10**8` is cheap to fold but not to add to itself
/// 33 times (the sum is materialised), compare or print.
pub(crate) const MAX_CONSTANT_ITEMS: u64 = 10_000;

/// What a constant expression folds to, as far as its size goes.
#[derive(Clone, Copy)]
enum Folded {
    Number,
    /// A list or tuple of this many items.
    Items(u64),
    Other,
}

/// Refuses a template with a constant list longer than [`MAX_CONSTANT_ITEMS`].
fn check_constants(stmt: &ast::Stmt<'_>) -> Result<(), Error> {
    use ast::Stmt as S;
    let exprs = |list: &[ast::Expr<'_>]| list.iter().try_for_each(check_expr);
    let body = |list: &[ast::Stmt<'_>]| list.iter().try_for_each(check_constants);
    match stmt {
        S::Template(t) => body(&t.children),
        S::EmitExpr(e) => check_expr(&e.expr),
        S::EmitRaw(_) | S::Continue(_) | S::Break(_) => Ok(()),
        S::ForLoop(f) => {
            check_expr(&f.target)?;
            check_expr(&f.iter)?;
            f.filter_expr.iter().try_for_each(check_expr)?;
            body(&f.body)?;
            body(&f.else_body)
        }
        S::IfCond(i) => {
            check_expr(&i.expr)?;
            body(&i.true_body)?;
            body(&i.false_body)
        }
        S::WithBlock(w) => {
            for (target, value) in &w.assignments {
                check_expr(target)?;
                check_expr(value)?;
            }
            body(&w.body)
        }
        S::Set(set) => {
            check_expr(&set.target)?;
            check_expr(&set.expr)
        }
        S::SetBlock(set) => {
            check_expr(&set.target)?;
            set.filter.iter().try_for_each(check_expr)?;
            body(&set.body)
        }
        S::AutoEscape(a) => {
            check_expr(&a.enabled)?;
            body(&a.body)
        }
        S::FilterBlock(f) => {
            check_expr(&f.filter)?;
            body(&f.body)
        }
        S::Block(b) => body(&b.body),
        S::Import(i) => {
            check_expr(&i.expr)?;
            check_expr(&i.name)
        }
        S::FromImport(i) => {
            check_expr(&i.expr)?;
            for (name, alias) in &i.names {
                check_expr(name)?;
                alias.iter().try_for_each(check_expr)?;
            }
            Ok(())
        }
        S::Extends(e) => check_expr(&e.name),
        S::Include(i) => check_expr(&i.name),
        S::Macro(m) => {
            exprs(&m.args)?;
            exprs(&m.defaults)?;
            body(&m.body)
        }
        S::CallBlock(c) => {
            check_call(&c.call)?;
            exprs(&c.macro_decl.args)?;
            exprs(&c.macro_decl.defaults)?;
            body(&c.macro_decl.body)
        }
        S::Do(d) => check_call(&d.call),
    }
}

fn check_call(call: &ast::Call<'_>) -> Result<(), Error> {
    check_expr(&call.expr)?;
    check_args(&call.args)
}

fn check_args(args: &[ast::CallArg<'_>]) -> Result<(), Error> {
    for arg in args {
        match arg {
            ast::CallArg::Pos(e)
            | ast::CallArg::Kwarg(_, e)
            | ast::CallArg::PosSplat(e)
            | ast::CallArg::KwargSplat(e) => check_expr(e)?,
        }
    }
    Ok(())
}

fn check_expr(expr: &ast::Expr<'_>) -> Result<(), Error> {
    folded(expr).map(|_| ())
}

/// What `expr` folds to, `None` where it is not constant; refuses a constant list longer than
/// [`MAX_CONSTANT_ITEMS`] in it.
fn folded(expr: &ast::Expr<'_>) -> Result<Option<Folded>, Error> {
    use ast::Expr as E;
    let all = |items: &[ast::Expr<'_>]| -> Result<bool, Error> {
        let mut constant = true;
        for item in items {
            constant &= folded(item)?.is_some();
        }
        Ok(constant)
    };
    let rv = match expr {
        E::Var(_) => None,
        E::Const(c) => Some(match c.value.kind() {
            ValueKind::Number => Folded::Number,
            ValueKind::Seq | ValueKind::Iterable => {
                Folded::Items(c.value.len().map_or(u64::MAX, |n| n as u64))
            }
            _ => Folded::Other,
        }),
        E::List(l) => all(&l.items)?.then_some(Folded::Items(l.items.len() as u64)),
        E::Tuple(t) => all(&t.items)?.then_some(Folded::Items(t.items.len() as u64)),
        E::Map(m) => (all(&m.keys)? & all(&m.values)?).then_some(Folded::Other),
        E::UnaryOp(u) => folded(&u.expr)?.map(|f| match u.op {
            ast::UnaryOpKind::Neg => f,
            ast::UnaryOpKind::Not => Folded::Other,
        }),
        E::BinOp(b) => {
            let (left, right) = (folded(&b.left)?, folded(&b.right)?);
            match (left, right) {
                (Some(l), Some(r)) => Some(match (b.op, l, r) {
                    (ast::BinOpKind::Mul, Folded::Items(n), Folded::Number) => {
                        Folded::Items(n.saturating_mul(count(&b.right)))
                    }
                    (ast::BinOpKind::Mul, Folded::Number, Folded::Items(n)) => {
                        Folded::Items(n.saturating_mul(count(&b.left)))
                    }
                    (ast::BinOpKind::Add, Folded::Items(a), Folded::Items(b)) => {
                        Folded::Items(a.saturating_add(b))
                    }
                    (
                        ast::BinOpKind::Add
                        | ast::BinOpKind::Sub
                        | ast::BinOpKind::Mul
                        | ast::BinOpKind::Div
                        | ast::BinOpKind::FloorDiv
                        | ast::BinOpKind::Rem
                        | ast::BinOpKind::Pow,
                        Folded::Number,
                        Folded::Number,
                    ) => Folded::Number,
                    _ => Folded::Other,
                }),
                _ => None,
            }
        }
        E::Compare(c) => {
            let mut constant = folded(&c.expr)?.is_some();
            for op in &c.ops {
                constant &= folded(&op.expr)?.is_some();
            }
            constant.then_some(Folded::Other)
        }
        E::Slice(s) => {
            folded(&s.expr)?;
            for part in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                folded(part)?;
            }
            None
        }
        E::IfExpr(i) => {
            folded(&i.test_expr)?;
            folded(&i.true_expr)?;
            i.false_expr.iter().try_for_each(check_expr)?;
            None
        }
        E::Filter(f) => {
            f.expr.iter().try_for_each(check_expr)?;
            check_args(&f.args)?;
            None
        }
        E::Test(t) => {
            folded(&t.expr)?;
            check_args(&t.args)?;
            None
        }
        E::GetAttr(g) => {
            folded(&g.expr)?;
            None
        }
        E::GetItem(g) => {
            folded(&g.expr)?;
            folded(&g.subscript_expr)?;
            None
        }
        E::Call(c) => {
            check_call(c)?;
            None
        }
    };
    if let Some(Folded::Items(n)) = rv {
        if n > MAX_CONSTANT_ITEMS {
            return Err(over_budget(format!(
                "a constant list of more than {MAX_CONSTANT_ITEMS} items"
            )));
        }
    }
    Ok(rv)
}

/// The count a constant list is repeated by (`[x] * count`); a number made only of numbers,
/// so folding it costs nothing.
fn count(expr: &ast::Expr<'_>) -> u64 {
    expr.as_const()
        .and_then(|v| i64::try_from(v).ok())
        .map_or(u64::MAX, |n| n.max(0) as u64)
}

/// A template compiled and rewritten: the instructions of its body and of its blocks.
pub(crate) struct Compiled<'s> {
    pub(crate) body: Instructions<'s>,
    pub(crate) blocks: BTreeMap<&'s str, Instructions<'s>>,
}

/// Parses and compiles `source`, and rewrites its instructions (see the module comment).
pub(crate) fn compile<'s>(
    name: &'s str,
    source: &'s str,
    syntax: &SyntaxConfig,
) -> Result<Compiled<'s>, Error> {
    let ast = machinery::parse(source, name, syntax.clone())?;
    check_constants(&ast)?;
    let mut generator = CodeGenerator::new(name, source);
    generator.compile_stmt(&ast);
    let (body, blocks) = generator.finish();
    Ok(Compiled {
        body: rewrite(&body),
        blocks: blocks
            .iter()
            .map(|(name, block)| (*name, rewrite(block)))
            .collect(),
    })
}

/// Renders compiled instructions into a string.
pub(crate) fn eval(
    env: &Environment<'_>,
    compiled: &Compiled<'_>,
    root: Value,
) -> Result<String, Error> {
    let mut text = String::new();
    let mut out = machinery::make_string_output(&mut text);
    let (_, state) = machinery::eval(
        env,
        &compiled.body,
        root,
        &compiled.blocks,
        &mut out,
        AutoEscape::None,
    )?;
    // Whatever the template built is dropped here, before the text is handed out.
    drop(state);
    Ok(text)
}

/// Rewrites instructions as the module comment says, keeping their source locations and
/// moving jump targets to the first instruction that replaces their target.
fn rewrite<'s>(old: &Instructions<'s>) -> Instructions<'s> {
    let mut new = Instructions::new(old.name(), old.source());
    let mut starts = Vec::new();
    let mut next = 0u32;
    let mut idx = 0u32;
    while let Some(instr) = old.get(idx) {
        starts.push(next);
        let span = old.get_span(idx);
        let line = old.get_line(idx);
        for instr in expand(instr) {
            next = match (span, line) {
                (Some(span), _) => new.add_with_span(instr, span),
                (None, Some(line)) => new.add_with_line(instr, line as u16),
                (None, None) => new.add(instr),
            } + 1;
        }
        idx += 1;
    }
    starts.push(next);
    let moved = |target: &mut u32| {
        if let Some(&start) = starts.get(*target as usize) {
            *target = start;
        }
    };
    for idx in 0..next {
        if let Some(
            Instruction::Jump(target)
            | Instruction::JumpIfFalse(target)
            | Instruction::JumpIfFalseOrPop(target)
            | Instruction::JumpIfTrueOrPop(target)
            | Instruction::Iterate(target)
            | Instruction::BuildMacro(_, target, _),
        ) = new.get_mut(idx)
        {
            moved(target);
        }
    }
    new
}

/// What one instruction becomes.
fn expand<'s>(instr: &Instruction<'s>) -> Vec<Instruction<'s>> {
    match instr {
        // Raw text is written through the formatter too, which counts the output.
        Instruction::EmitRaw(text) => vec![
            Instruction::LoadConst(Value::from_safe_string(text.to_string())),
            Instruction::Emit,
        ],
        other => vec![other.clone()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_tags_and_deep_blocks_are_refused_before_parsing() {
        let syntax = SyntaxConfig::default();
        let chain = format!("{{{{ 1{} }}}}", " + 1".repeat(MAX_TAG_TOKENS));
        assert!(check_source(&chain, &syntax).is_err());
        let elifs = format!(
            "{{% if a %}}{}{{% endif %}}",
            "{% elif a %}".repeat(MAX_BLOCK_DEPTH)
        );
        assert!(check_source(&elifs, &syntax).is_err());
        let fine = "{% for m in messages %}{% if a %}{% elif b %}{% else %}{% set x %}{{ m }}{% endset %}{% endif %}{% endfor %}";
        assert_eq!(check_source(fine, &syntax), Ok(()));
        let sequence = "{% if a %}{% endif %}".repeat(1000);
        assert_eq!(check_source(&sequence, &syntax), Ok(()));
    }
}
