//! Checks minijinja does not make, added to a chat template as it is compiled.
//!
//! minijinja compares, prints, hashes, iterates and drops a value by recursing over it,
//! without fuel, and some of its operations build values nested without bound. It has no hook
//! on its operators, so the template is compiled here through its machinery API (parser and
//! code generator), and the instructions are rewritten before they run:
//!
//! * `==`, `!=`, `<`, `<=`, `>`, `>=`, `in` and `~` become calls of functions of this module,
//!   which pay for the walk over their operands (see [`super::budget`]) and then compute what
//!   the instruction did;
//! * other instructions get a check before them: a call that receives their operands and
//!   gives them back (`UnpackLists` puts them on the stack again), or one on a copy of the
//!   value at the top of the stack. Storing a value (`{% set %}`, a macro's arguments) and
//!   setting a namespace's attribute check it, and store it with its lazy sequences made
//!   lists; adding two lists needs the fuel of their concatenation; a key that is a list or
//!   mapping is paid for; the filters and tests that compare or print their arguments pay
//!   for that first.
//!
//! Where an operand is surely a string or a number (a constant, the result of `~` or of
//! arithmetic, ...), as most of a real template's are, the check is left out. The functions
//! `namespace`, `dict` and `debug` are replaced by checked ones, and pycompat's methods are
//! checked where they are called (`super::python_method`). The names of the functions added
//! cannot be written in a template (they hold a `:`), so a template can neither call nor
//! shadow them.
//!
//! Before compiling, [`check_source`] and the compiler's constant folding are bounded (tags,
//! blocks, constant lists): minijinja parses, compiles and drops a long chain of operators by
//! recursing once per link, and folds constants without fuel.

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::machinery::{self, ast, CodeGenerator, Instruction, Instructions, Token};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{
    Enumerator, Kwargs, Object, ObjectRepr, Rest, Tuple, ValueKind, ValueOrKwargs,
};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, Value};

use super::budget::{
    check_printable, ensure_fuel, is_container, over_budget, stored, walk, walk_pair, Items, Limit,
    Tally,
};

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

/// The functions the rewritten instructions call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    // In place of an instruction; they return its result.
    Compare(Cmp),
    In,
    Concat,
    // Before an instruction, on a copy of the value at the top of the stack.
    Key,
    // Before an instruction, on its operands, which they return (as stored, for `Store` and
    // `SetAttr`).
    Store,
    CompareOperands,
    Add,
    MapKeys,
    KwargsKeys,
    SetAttr,
    Changed,
    Filter(FilterKind),
    TestCompare,
    TestIn,
    TestPrint,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Lte,
    Gt,
    Gte,
}

/// How a filter uses its arguments, as far as its cost goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FilterKind {
    /// Prints them, or converts them to strings.
    Print,
    /// Compares or hashes their items (sorting: a few times each).
    Order,
    /// Applies a test to each item of the first (or to an attribute of it), with the others.
    Each,
    /// `map`: applies a filter to each item of the first, or takes an attribute of it.
    Map,
    /// `chain`: builds a lazy sequence (or mapping) over them.
    Chain,
    /// Visits their items (`sum`, which adds them).
    Visit,
}

const HOOKS: [Hook; 25] = [
    Hook::Compare(Cmp::Eq),
    Hook::Compare(Cmp::Ne),
    Hook::Compare(Cmp::Lt),
    Hook::Compare(Cmp::Lte),
    Hook::Compare(Cmp::Gt),
    Hook::Compare(Cmp::Gte),
    Hook::In,
    Hook::Concat,
    Hook::Store,
    Hook::Key,
    Hook::CompareOperands,
    Hook::Add,
    Hook::MapKeys,
    Hook::KwargsKeys,
    Hook::SetAttr,
    Hook::Changed,
    Hook::Filter(FilterKind::Print),
    Hook::Filter(FilterKind::Order),
    Hook::Filter(FilterKind::Each),
    Hook::Filter(FilterKind::Map),
    Hook::Filter(FilterKind::Chain),
    Hook::Filter(FilterKind::Visit),
    Hook::TestCompare,
    Hook::TestIn,
    Hook::TestPrint,
];

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Compare(Cmp::Eq) => "hearth:eq",
            Hook::Compare(Cmp::Ne) => "hearth:ne",
            Hook::Compare(Cmp::Lt) => "hearth:lt",
            Hook::Compare(Cmp::Lte) => "hearth:lte",
            Hook::Compare(Cmp::Gt) => "hearth:gt",
            Hook::Compare(Cmp::Gte) => "hearth:gte",
            Hook::In => "hearth:in",
            Hook::Concat => "hearth:concat",
            Hook::Store => "hearth:store",
            Hook::Key => "hearth:key",
            Hook::CompareOperands => "hearth:compare-operands",
            Hook::Add => "hearth:add",
            Hook::MapKeys => "hearth:map-keys",
            Hook::KwargsKeys => "hearth:kwargs-keys",
            Hook::SetAttr => "hearth:setattr",
            Hook::Changed => "hearth:changed",
            Hook::Filter(FilterKind::Print) => "hearth:filter-print",
            Hook::Filter(FilterKind::Order) => "hearth:filter-order",
            Hook::Filter(FilterKind::Each) => "hearth:filter-each",
            Hook::Filter(FilterKind::Map) => "hearth:filter-map",
            Hook::Filter(FilterKind::Chain) => "hearth:filter-chain",
            Hook::Filter(FilterKind::Visit) => "hearth:filter-visit",
            Hook::TestCompare => "hearth:test-compare",
            Hook::TestIn => "hearth:test-in",
            Hook::TestPrint => "hearth:test-print",
        }
    }
}

/// The check before a filter, by its name; `None` for those that look at no more than the
/// first level of their arguments, and for this module's own filters, which check.
fn filter_kind(name: &str) -> Option<FilterKind> {
    Some(match name {
        "length" | "count" | "first" | "last" | "default" | "d" | "attr" | "list" | "batch"
        | "slice" | "reverse" | "items" | "bool" | "round" | "abs" | "int" | "float" | "zip"
        | "tojson" | "string" | "join" => return None,
        "sort" | "dictsort" | "unique" | "min" | "max" | "groupby" => FilterKind::Order,
        "select" | "reject" | "selectattr" | "rejectattr" => FilterKind::Each,
        "map" => FilterKind::Map,
        "chain" => FilterKind::Chain,
        "sum" => FilterKind::Visit,
        _ => FilterKind::Print,
    })
}

/// The check before a test, by its name; `None` for those that do not walk their arguments.
fn test_hook(name: &str) -> Option<Hook> {
    match name {
        "eq" | "equalto" | "==" | "ne" | "!=" | "lt" | "lessthan" | "<" | "le" | "<=" | "gt"
        | "greaterthan" | ">" | "ge" | ">=" => Some(Hook::TestCompare),
        "in" => Some(Hook::TestIn),
        "startingwith" | "endingwith" => Some(Hook::TestPrint),
        _ => None,
    }
}

/// Rewrites instructions as the module comment says, keeping their source locations and
/// moving jump targets to the first instruction that replaces their target.
fn rewrite<'s>(old: &Instructions<'s>) -> Instructions<'s> {
    let code = Code::new(old);
    let mut new = Instructions::new(old.name(), old.source());
    let mut starts = Vec::with_capacity(code.instrs.len() + 1);
    let mut next = 0u32;
    for (idx, instr) in code.instrs.iter().enumerate() {
        starts.push(next);
        let span = old.get_span(idx as u32);
        let line = old.get_line(idx as u32);
        let loop_target = code.is_loop_target(idx);
        for instr in expand(instr, |depth| loop_target || code.is_scalar(idx, depth)) {
            next = match (span, line) {
                (Some(span), _) => new.add_with_span(instr, span),
                (None, Some(line)) => new.add_with_line(instr, line as u16),
                (None, None) => new.add(instr),
            } + 1;
        }
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

/// Instructions as compiled, with what is known about their operands: most of a real
/// template's operands are strings and numbers, which need no check.
struct Code<'a, 's> {
    instrs: Vec<&'a Instruction<'s>>,
    /// Instructions a jump may land on: what was on the stack there is not known.
    targets: std::collections::HashSet<usize>,
}

impl<'a, 's> Code<'a, 's> {
    fn new(old: &'a Instructions<'s>) -> Self {
        let instrs: Vec<_> = (0..).map_while(|idx| old.get(idx)).collect();
        let targets = instrs
            .iter()
            .filter_map(|instr| match instr {
                Instruction::Jump(target)
                | Instruction::JumpIfFalse(target)
                | Instruction::JumpIfFalseOrPop(target)
                | Instruction::JumpIfTrueOrPop(target)
                | Instruction::Iterate(target)
                | Instruction::BuildMacro(_, target, _) => Some(*target as usize),
                _ => None,
            })
            .collect();
        Code { instrs, targets }
    }

    /// The instruction that pushed the value `depth` places below the top of the stack as
    /// instruction `at` starts, where it is in the same run of instructions without jumps.
    fn producer(&self, at: usize, depth: usize) -> Option<usize> {
        let mut depth = depth;
        for idx in (0..at).rev() {
            if self.targets.contains(&(idx + 1)) {
                return None;
            }
            let pops = pops(self.instrs[idx])?;
            if depth == 0 {
                return Some(idx);
            }
            depth = depth - 1 + pops;
        }
        None
    }

    /// Whether instruction `at` stores the item of a loop (or a part of it) in the loop's
    /// variable: a loop's variables are set afresh at each item, so what they hold was
    /// stored already or made in the tag of the `for`.
    fn is_loop_target(&self, at: usize) -> bool {
        let mut idx = at;
        while idx > 0 && matches!(self.instrs[idx], Instruction::StoreLocal(_)) {
            idx -= 1;
            match self.instrs[idx] {
                Instruction::Iterate(_) => return true,
                Instruction::UnpackList(_) => {
                    return idx > 0 && matches!(self.instrs[idx - 1], Instruction::Iterate(_))
                }
                _ => {}
            }
        }
        false
    }

    /// Whether the value `depth` places below the top as instruction `at` starts is surely not
    /// a list or mapping (or an error is raised before it is used).
    fn is_scalar(&self, at: usize, depth: usize) -> bool {
        let Some(idx) = self.producer(at, depth) else {
            return false;
        };
        use Instruction as I;
        match self.instrs[idx] {
            // A long constant string costs to compare: its checks charge it.
            I::LoadConst(value) => {
                !is_container(value) && value.as_str().is_none_or(|s| s.len() <= 256)
            }
            I::Sub | I::Div | I::IntDiv | I::Rem | I::Pow | I::Neg | I::Not => true,
            I::Eq | I::Ne | I::Lt | I::Lte | I::Gt | I::Gte | I::In => true,
            I::StringConcat | I::EndCapture | I::PerformTest(..) => true,
            I::IsUndefined => true,
            // A string or a number plus anything is a string or a number, or an error.
            I::Add => self.is_scalar(idx, 0) || self.is_scalar(idx, 1),
            I::Mul => self.is_scalar(idx, 0) && self.is_scalar(idx, 1),
            I::ApplyFilter(name, ..) => SCALAR_FILTERS.contains(&normalized(name).as_str()),
            I::CallMethod(name, _) => SCALAR_METHODS.contains(name),
            _ => false,
        }
    }
}

/// Filters that return a string, a number or a boolean.
const SCALAR_FILTERS: [&str; 27] = [
    "length",
    "count",
    "trim",
    "lower",
    "upper",
    "title",
    "capitalize",
    "replace",
    "string",
    "tojson",
    "join",
    "indent",
    "format",
    "safe",
    "escape",
    "e",
    "int",
    "float",
    "round",
    "abs",
    "bool",
    "wordcount",
    "truncate",
    "center",
    "striptags",
    "urlencode",
    "pprint",
];

/// pycompat's string methods that return a string, a number or a boolean.
const SCALAR_METHODS: [&str; 22] = [
    "strip",
    "lstrip",
    "rstrip",
    "lower",
    "upper",
    "title",
    "capitalize",
    "replace",
    "format",
    "join",
    "startswith",
    "endswith",
    "isalnum",
    "isalpha",
    "isascii",
    "isdigit",
    "islower",
    "isnumeric",
    "isspace",
    "isupper",
    "find",
    "rfind",
];

/// How many values an instruction that pushes one value pops; `None` for the others.
fn pops(instr: &Instruction<'_>) -> Option<usize> {
    use Instruction as I;
    Some(match instr {
        I::LoadConst(_) | I::Lookup(_) | I::EndCapture | I::GetClosure => 0,
        I::GetAttr(_) | I::Not | I::Neg | I::IsUndefined => 1,
        I::GetItem
        | I::Add
        | I::Sub
        | I::Mul
        | I::Div
        | I::IntDiv
        | I::Rem
        | I::Pow
        | I::Eq
        | I::Ne
        | I::Lt
        | I::Lte
        | I::Gt
        | I::Gte
        | I::StringConcat
        | I::In => 2,
        I::Slice => 4,
        I::BuildList(Some(n)) | I::BuildTuple(Some(n)) | I::MergeKwargs(n) => *n,
        I::BuildMap(n) | I::BuildKwargs(n) => 2 * n,
        I::ApplyFilter(_, Some(n), _)
        | I::PerformTest(_, Some(n), _)
        | I::CallMethod(_, Some(n))
        | I::CallObject(Some(n)) => *n as usize,
        // `loop(...)` and `super()` jump elsewhere.
        I::CallFunction(name, Some(n)) if *name != "loop" && *name != "super" => *n as usize,
        _ => return None,
    })
}

/// Filter and test names as minijinja looks them up: without whitespace.
fn normalized(name: &str) -> String {
    name.chars().filter(|c| !c.is_ascii_whitespace()).collect()
}

/// What one instruction becomes; `scalar(depth)` tells whether the operand `depth` places
/// below the top of the stack is surely a string, number or the like, which needs no check.
fn expand<'s>(instr: &Instruction<'s>, scalar: impl Fn(usize) -> bool) -> Vec<Instruction<'s>> {
    use Instruction as I;
    let call = |hook: Hook, args: u16| I::CallFunction(hook.name(), Some(args));
    // A hook on the value at the top of the stack, which stays there.
    let on_top = |hook: Hook| vec![I::DupTop, call(hook, 1), I::DiscardTop, instr.clone()];
    // A hook that receives the operands and gives them back.
    let on_operands = |hook: Hook, args: Option<u16>| {
        let mut v = vec![I::CallFunction(hook.name(), args), I::UnpackLists(1)];
        if args.is_some() {
            // UnpackLists leaves the count, which only a call of unknown arity wants.
            v.push(I::DiscardTop);
        }
        v.push(instr.clone());
        v
    };
    match instr {
        // Raw text is written through the formatter too, which counts the output.
        I::EmitRaw(text) => vec![
            I::LoadConst(Value::from_safe_string(text.to_string())),
            I::Emit,
        ],
        I::Eq => vec![call(Hook::Compare(Cmp::Eq), 2)],
        I::Ne => vec![call(Hook::Compare(Cmp::Ne), 2)],
        I::Lt => vec![call(Hook::Compare(Cmp::Lt), 2)],
        I::Lte => vec![call(Hook::Compare(Cmp::Lte), 2)],
        I::Gt => vec![call(Hook::Compare(Cmp::Gt), 2)],
        I::Gte => vec![call(Hook::Compare(Cmp::Gte), 2)],
        I::In => vec![call(Hook::In, 2)],
        I::StringConcat => vec![call(Hook::Concat, 2)],
        // A chained comparison (`a < b < c`), with any operator: checked for both.
        I::CompareAndPreserve(_) if !scalar(1) => on_operands(Hook::CompareOperands, Some(2)),
        // Only two sequences may be materialised.
        I::Add if !scalar(0) && !scalar(1) => on_operands(Hook::Add, Some(2)),
        I::GetItem if !scalar(0) => on_top(Hook::Key),
        I::BuildMap(pairs) if !(0..*pairs).all(|pair| scalar(2 * pair + 1)) => {
            match u16::try_from(pairs * 2) {
                Ok(n) => on_operands(Hook::MapKeys, Some(n)),
                Err(_) => vec![instr.clone()],
            }
        }
        I::MergeKwargs(maps) => match u16::try_from(*maps) {
            Ok(n) => on_operands(Hook::KwargsKeys, Some(n)),
            Err(_) => vec![instr.clone()],
        },
        I::SetAttr(_) if !scalar(1) => on_operands(Hook::SetAttr, Some(2)),
        I::StoreLocal(_) if !scalar(0) => on_operands(Hook::Store, Some(1)),
        I::ApplyFilter(name, args, _) => match filter_kind(&normalized(name)) {
            Some(_) if args.is_some_and(|n| (0..n as usize).all(&scalar)) => vec![instr.clone()],
            Some(kind) => on_operands(Hook::Filter(kind), *args),
            None => vec![instr.clone()],
        },
        I::PerformTest(name, args, _) => match test_hook(&normalized(name)) {
            // The value tested is the deepest argument.
            Some(_) if args.is_some_and(|n| n > 0 && scalar(n as usize - 1)) => {
                vec![instr.clone()]
            }
            Some(hook) => on_operands(hook, *args),
            None => vec![instr.clone()],
        },
        I::CallMethod("changed", args) => on_operands(Hook::Changed, *args),
        other => vec![other.clone()],
    }
}

/// Registers the hooks, and the checked `namespace`, `dict` and `debug`, in `env`;
/// `max_output` is the output cap, which also bounds what may be converted to a string.
pub(crate) fn install(env: &mut Environment<'_>, max_output: usize) {
    for hook in HOOKS {
        env.add_global(hook.name(), Value::from_object(Hooked { hook, max_output }));
    }
    env.add_function(
        "namespace",
        |state: &mut State, defaults: Option<ValueOrKwargs>| -> Result<Value, Error> {
            // The namespace holds the values of `defaults`, a mapping.
            if let Some(defaults) = &defaults {
                match defaults.as_object().and_then(|obj| obj.try_iter_pairs()) {
                    Some(pairs) => {
                        for (_, value) in pairs {
                            namespace_value(state, &value)?;
                        }
                    }
                    None => {
                        namespace_value(state, defaults)?;
                    }
                }
            }
            let ns = minijinja::functions::namespace(defaults)?;
            state
                .get_or_insert_extension(Namespaces::default())
                .0
                .push(ns.clone());
            Ok(ns)
        },
    );
    env.add_function(
        "dict",
        |state: &mut State, value: Option<Value>, update_with: Kwargs| {
            if let Some(value) = &value {
                check_keys(state, std::slice::from_ref(value))?;
            }
            minijinja::functions::dict(value, update_with)
        },
    );
    env.add_function(
        "debug",
        move |state: &mut State, args: Rest<Value>| -> Result<String, Error> {
            let mut tally = Tally::new(Limit::print(max_output));
            if args.is_empty() {
                for name in state.known_variables() {
                    if let Some(value) = state.lookup(&name) {
                        walk(state, &mut tally, &value, &mut |_| Ok(()))?;
                    }
                }
            }
            for value in args.iter() {
                walk(state, &mut tally, value, &mut |_| Ok(()))?;
            }
            Ok(minijinja::functions::debug(state, args))
        },
    );
}

/// Pays for a method's walk over its arguments where they are lists or mappings: `str.join`
/// and `str.format` print them, `dict.get` compares its key with a few keys, `list.count`
/// compares the argument with every item.
pub(crate) fn check_method(
    state: &State,
    receiver: &Value,
    method: &str,
    args: &[Value],
    cap: usize,
) -> Result<(), Error> {
    check_all(state, args, Limit::print(cap))?;
    if method == "count" && args.iter().any(is_container) {
        check_all(state, std::slice::from_ref(receiver), Limit::VISIT)?;
    }
    Ok(())
}

/// The namespaces a render created, to keep them out of one another.
#[derive(Default)]
struct Namespaces(Vec<Value>);

/// `value` as a namespace may hold it (see [`stored`]), refused if it holds a namespace (a
/// namespace that holds itself, or two that hold each other, are never dropped and nest
/// without end) or a loop object (it holds the sequence it runs over, so loops over a list
/// with the previous loop object nest without end).
fn namespace_value(state: &State, value: &Value) -> Result<Value, Error> {
    let namespaces = state
        .get_extension::<Namespaces>()
        .map(|n| n.0.clone())
        .unwrap_or_default();
    stored(state, value, &mut |item| {
        if item.kind() != ValueKind::Map {
            return Ok(());
        }
        if namespaces
            .iter()
            .any(|ns| minijinja::tests::is_sameas(ns, item))
        {
            return Err(over_budget("a namespace may not hold a namespace".into()));
        }
        if is_loop(item) {
            return Err(over_budget("a namespace may not hold a loop".into()));
        }
        Ok(())
    })
}

/// Whether `value` is a `loop` object (its attributes are those of a loop).
fn is_loop(value: &Value) -> bool {
    value.as_object().is_some_and(|obj| {
        matches!(obj.enumerate(), Enumerator::Str(keys) if keys.contains(&"depth0") && keys.contains(&"revindex0"))
    })
}

/// Walks the keys of mappings that are themselves lists or mappings: a lookup compares the
/// key with several of a mapping's keys.
fn check_keys(state: &State, maps: &[Value]) -> Result<(), Error> {
    for map in maps {
        if let Some(pairs) = map.as_object().and_then(|obj| obj.try_iter_pairs()) {
            for (key, _) in pairs {
                check_key(state, &key)?;
            }
        }
    }
    Ok(())
}

/// Pays for comparing a key with a few keys of a mapping (see [`check_keys`]).
fn check_key(state: &State, key: &Value) -> Result<(), Error> {
    if let Some(s) = key.as_str() {
        state.consume_fuel(s.len() as u64 / 16)?;
    } else if is_container(key) {
        let fuel = check_all(state, std::slice::from_ref(key), Limit::VISIT)?;
        state.consume_fuel(fuel * 3)?;
    }
    Ok(())
}

/// Walks values that are lists or mappings (and strings, where their bytes cost), with
/// `limit`; returns the fuel it charged.
fn check_all(state: &State, values: &[Value], limit: Limit) -> Result<u64, Error> {
    let mut tally = Tally::new(limit);
    for value in values {
        if is_container(value) || (limit.bytes_cost() && value.as_str().is_some()) {
            walk(state, &mut tally, value, &mut |_| Ok(()))?;
        }
    }
    Ok(tally.fuel())
}

/// Pays for comparing `a` with `b`: a walk of the smaller, where both are lists or mappings;
/// the shorter, where both are strings.
fn check_compare(state: &State, a: &Value, b: &Value) -> Result<(), Error> {
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        state.consume_fuel(x.len().min(y.len()) as u64 / 64)?;
    } else if is_container(a) && is_container(b) && !minijinja::tests::is_sameas(a, b) {
        walk_pair(state, a, b)?;
    }
    Ok(())
}

/// Pays for `needle in container`: a string looks for the needle's text; a list compares the
/// needle with every item, a mapping with a few keys.
fn check_in(state: &State, needle: &Value, container: &Value, cap: usize) -> Result<(), Error> {
    if container.as_str().is_some() {
        check_printable(state, needle, cap)?;
    } else if is_container(needle) {
        check_key(state, needle)?;
        if container.kind() != ValueKind::Map {
            check_all(state, std::slice::from_ref(container), Limit::VISIT)?;
        }
    }
    Ok(())
}

/// Whether `chain` may wrap `value` as it is: a list, tuple or mapping that holds its items.
fn is_materialized(value: &Value) -> bool {
    value.downcast_object_ref::<Vec<Value>>().is_some()
        || value.downcast_object_ref::<Tuple>().is_some()
        || value.downcast_object_ref::<Items>().is_some()
        || value
            .downcast_object_ref::<BTreeMap<Value, Value>>()
            .is_some()
        || value.is_kwargs()
}

/// `value` with its items in a list (or mapping) of their own if it is a lazy sequence or
/// mapping: `chain` wraps its operands, and a chain of mappings is a mapping, which is stored
/// as it is, so applied to its own result in a loop it would nest without end, out of sight
/// of a walk over the items.
fn materialize(state: &State, value: &Value) -> Result<Value, Error> {
    let Some(obj) = value.as_object() else {
        return Ok(value.clone());
    };
    if is_materialized(value) || !is_container(value) {
        return Ok(value.clone());
    }
    let len = obj.enumerator_len();
    if let Some(len) = len {
        // An item costs its visit and its slot.
        ensure_fuel(state, len as u64)?;
    }
    let mut items = Vec::new();
    let mut pairs = Vec::new();
    if value.kind() == ValueKind::Map {
        for (key, value) in obj.try_iter_pairs().into_iter().flatten() {
            state.consume_fuel(1)?;
            pairs.push((key, value));
        }
        return Ok(Value::from(pairs.into_iter().collect::<BTreeMap<_, _>>()));
    }
    for item in value.try_iter()? {
        state.consume_fuel(1)?;
        items.push(item);
    }
    Ok(match obj.repr() {
        ObjectRepr::Seq => Value::from(items),
        _ => Items::value(items, len.is_some()),
    })
}

/// A hook, as a callable value.
#[derive(Debug)]
struct Hooked {
    hook: Hook,
    max_output: usize,
}

/// Operands handed back to the stack (by `UnpackLists`).
#[derive(Debug)]
struct Operands(Vec<Value>);

impl Object for Operands {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.clone())
    }
}

impl Object for Hooked {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn call(self: &Arc<Self>, state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let cap = self.max_output;
        let pass =
            |args: Vec<Value>| -> Result<Value, Error> { Ok(Value::from_object(Operands(args))) };
        match (self.hook, args) {
            (Hook::Compare(cmp), [a, b]) => {
                check_compare(state, a, b)?;
                Ok(Value::from(match cmp {
                    Cmp::Eq => a == b,
                    Cmp::Ne => a != b,
                    Cmp::Lt => a < b,
                    Cmp::Lte => a <= b,
                    Cmp::Gt => a > b,
                    Cmp::Gte => a >= b,
                }))
            }
            (Hook::In, [needle, container]) => {
                check_in(state, needle, container, cap)?;
                contains(state, container, needle)
            }
            (Hook::Concat, [left, right]) => concat(state, left, right, cap),
            (Hook::Store, [value]) => pass(vec![stored(state, value, &mut |_| Ok(()))?]),
            (Hook::Key, [key]) => {
                check_key(state, key)?;
                Ok(Value::UNDEFINED)
            }
            (Hook::CompareOperands, [a, b]) => {
                check_compare(state, a, b)?;
                check_in(state, a, b, cap)?;
                pass(args.to_vec())
            }
            (Hook::Add, [a, b]) => {
                // minijinja materialises a sum of lists once 32 lazy sums are stacked, and
                // charges the list once it is built.
                let seq = |v: &Value| {
                    matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable) && !v.is_tuple()
                };
                if seq(a) && seq(b) {
                    if let (Some(x), Some(y)) = (a.len(), b.len()) {
                        ensure_fuel(state, (x as u64).saturating_add(y as u64) / 2)?;
                    }
                }
                pass(args.to_vec())
            }
            (Hook::MapKeys, _) => {
                for key in args.iter().step_by(2) {
                    check_key(state, key)?;
                }
                pass(args.to_vec())
            }
            (Hook::KwargsKeys, _) => {
                check_keys(state, args)?;
                pass(args.to_vec())
            }
            (Hook::SetAttr, [value, ns]) => pass(vec![namespace_value(state, value)?, ns.clone()]),
            (Hook::Changed, [_, rest @ ..]) => {
                // The loop keeps the values to compare the next ones with: they may not hold
                // a loop, which could be this one.
                for value in rest {
                    stored(state, value, &mut |item| {
                        if is_loop(item) {
                            Err(over_budget("loop.changed() of a loop".into()))
                        } else {
                            Ok(())
                        }
                    })?;
                }
                check_all(state, rest, Limit::VISIT)?;
                pass(args.to_vec())
            }
            (Hook::Filter(kind), [first, rest @ ..]) => {
                match kind {
                    FilterKind::Print => {
                        check_all(state, args, Limit::print(cap))?;
                    }
                    FilterKind::Visit => {
                        check_all(state, args, Limit::VISIT)?;
                    }
                    FilterKind::Order => {
                        // Sorting compares each item a few times.
                        let fuel = check_all(state, args, Limit::VISIT)?;
                        let len = first.len().unwrap_or(0) as u64;
                        let rounds = u64::from(u64::BITS - len.leading_zeros());
                        state.consume_fuel(fuel.saturating_mul(rounds) / 4)?;
                    }
                    FilterKind::Each | FilterKind::Map => {
                        // A filter applied to each item (`map('lower')`) may print it.
                        if kind == FilterKind::Map
                            && rest
                                .first()
                                .and_then(Value::as_str)
                                .is_some_and(|name| filter_kind(name).is_some())
                        {
                            check_all(state, std::slice::from_ref(first), Limit::print(cap))?;
                        }
                        // Each item (or its attribute) meets the other arguments, which the
                        // test or filter may compare with it.
                        let others = check_all(state, rest, Limit::VISIT)?;
                        let len = first.len().unwrap_or(0) as u64;
                        state.consume_fuel(others.saturating_mul(len))?;
                    }
                    FilterKind::Chain => {
                        return pass(
                            args.iter()
                                .map(|v| materialize(state, v))
                                .collect::<Result<_, _>>()?,
                        );
                    }
                }
                pass(args.to_vec())
            }
            (Hook::TestCompare, [a, b, ..]) => {
                check_compare(state, a, b)?;
                pass(args.to_vec())
            }
            (Hook::TestPrint, _) => {
                check_all(state, args, Limit::print(cap))?;
                pass(args.to_vec())
            }
            (Hook::TestIn, [needle, container, ..]) => {
                check_in(state, needle, container, cap)?;
                pass(args.to_vec())
            }
            // Calls of other shapes fail in the instruction they precede.
            (_, _) => match self.hook {
                Hook::Compare(_) | Hook::In | Hook::Concat => Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "a rewritten operator received the wrong operands",
                )),
                Hook::Key => Ok(Value::UNDEFINED),
                _ => pass(args.to_vec()),
            },
        }
    }
}

/// `needle in container`, as minijinja's `In` instruction computes it.
fn contains(state: &State, container: &Value, needle: &Value) -> Result<Value, Error> {
    if container.is_undefined() {
        return Ok(Value::from(false));
    }
    let found = if let Some(s) = container.as_str() {
        state.consume_fuel(s.len() as u64 / 64)?;
        match needle.as_str() {
            Some(n) => s.contains(n),
            None => s.contains(&needle.to_string()),
        }
    } else if let Some(obj) = container.as_object() {
        match obj.repr() {
            ObjectRepr::Map => obj.get_value(needle).is_some(),
            ObjectRepr::Seq | ObjectRepr::Iterable => {
                let mut found = false;
                // A string needle is compared with each string item.
                let text = needle.as_str().map_or(0, str::len) as u64;
                for (idx, item) in container.try_iter()?.checked().enumerate() {
                    let item = item?;
                    if idx % 2 == 1 {
                        state.consume_fuel(1)?;
                    }
                    if let Some(s) = item.as_str() {
                        state.consume_fuel(text.min(s.len() as u64) / 64)?;
                    }
                    if item == *needle {
                        found = true;
                        break;
                    }
                }
                found
            }
            _ => false,
        }
    } else {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "cannot perform a containment check on this value",
        ));
    };
    Ok(Value::from(found))
}

/// `left ~ right`, as minijinja's `StringConcat` instruction computes it, after checking that
/// a list or mapping among them can be printed.
fn concat(state: &mut State, left: &Value, right: &Value, cap: usize) -> Result<Value, Error> {
    let text_len = |v: &Value| v.as_str().map_or(0, |s| s.len() as u64);
    ensure_fuel(state, (text_len(left) + text_len(right)) / 64)?;
    check_printable(state, left, cap)?;
    check_printable(state, right, cap)?;
    let formats_object = left.as_object().is_some() || right.as_object().is_some();
    let rv =
        if left.is_safe() != right.is_safe() && !matches!(state.auto_escape(), AutoEscape::None) {
            // Like Jinja2's markup_join: the side that is not safe is escaped.
            let mut rv = String::new();
            for value in [left, right] {
                match value.as_str() {
                    Some(s) if value.is_safe() => rv.push_str(s),
                    _ => rv.push_str(&state.format(value.clone())?),
                }
            }
            Value::from_safe_string(rv)
        } else if let (Some(l), Some(r)) = (left.as_str(), right.as_str()) {
            let rv = [l, r].concat();
            if left.is_safe() && right.is_safe() {
                Value::from_safe_string(rv)
            } else {
                Value::from(rv)
            }
        } else {
            Value::from(format!("{left}{right}"))
        };
    if formats_object {
        // minijinja charges text made by formatting lists and mappings 16 units a byte.
        state.consume_fuel(rv.as_str().map_or(0, str::len) as u64 / 4)?;
    }
    Ok(rv)
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
