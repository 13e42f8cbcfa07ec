//! The bound on constant lists, checked on the parse tree before it is compiled: minijinja
//! folds constant expressions while it compiles, without fuel.

use minijinja::machinery::ast;
use minijinja::value::ValueKind;
use minijinja::Error;

use crate::chat::budget::over_budget;

/// Longest constant list the compiler may fold: minijinja folds constant expressions while it
/// compiles, without fuel, and a lazy `[1] * 10**8` is cheap to fold but not to add to itself
/// 33 times (the sum is materialised), compare or print.
const MAX_CONSTANT_ITEMS: u64 = 10_000;

/// What a constant expression folds to, as far as its size goes.
#[derive(Clone, Copy)]
enum Folded {
    Number,
    /// A list or tuple of this many items.
    Items(u64),
    Other,
}

/// Refuses a template with a constant list longer than [`MAX_CONSTANT_ITEMS`].
pub(super) fn check_constants(stmt: &ast::Stmt<'_>) -> Result<(), Error> {
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
        // Not folded: their operands are checked.
        E::Slice(s) => unfolded(
            [
                Some(&s.expr),
                s.start.as_ref(),
                s.stop.as_ref(),
                s.step.as_ref(),
            ],
            &[],
        )?,
        E::IfExpr(i) => unfolded(
            [
                Some(&i.test_expr),
                Some(&i.true_expr),
                i.false_expr.as_ref(),
            ],
            &[],
        )?,
        E::Filter(f) => unfolded([f.expr.as_ref()], &f.args)?,
        E::Test(t) => unfolded([Some(&t.expr)], &t.args)?,
        E::GetAttr(g) => unfolded([Some(&g.expr)], &[])?,
        E::GetItem(g) => unfolded([Some(&g.expr), Some(&g.subscript_expr)], &[])?,
        E::Call(c) => check_call(c).map(|()| None)?,
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

/// Checks the operands and arguments of an expression that is not folded; `None`, as it is not
/// constant.
fn unfolded<'e, 's: 'e, const N: usize>(
    operands: [Option<&'e ast::Expr<'s>>; N],
    args: &[ast::CallArg<'s>],
) -> Result<Option<Folded>, Error> {
    operands.into_iter().flatten().try_for_each(check_expr)?;
    check_args(args)?;
    Ok(None)
}

/// The count a constant list is repeated by (`[x] * count`); a number made only of numbers,
/// so folding it costs nothing.
fn count(expr: &ast::Expr<'_>) -> u64 {
    expr.as_const()
        .and_then(|v| i64::try_from(v).ok())
        .map_or(u64::MAX, |n| n.max(0) as u64)
}
