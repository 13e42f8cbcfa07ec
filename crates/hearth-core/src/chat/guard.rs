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
//! checked where they are called (`super::python`). The names of the functions added
//! cannot be written in a template (they hold a `:`), so a template can neither call nor
//! shadow them.
//!
//! Before compiling, [`check_source`] and the compiler's constant folding are bounded (tags,
//! blocks, constant lists): minijinja parses, compiles and drops a long chain of operators by
//! recursing once per link, and folds constants without fuel.
//!
//! This module compiles and runs a template; its parts:
//!
//! * [`source`]: the bounds on the source, checked before it is parsed;
//! * [`constants`]: the bound on constant lists, checked before the parse tree is compiled;
//! * [`hook`]: the functions the rewritten instructions call, and which filters and tests
//!   get which;
//! * [`rewrite`](mod@rewrite): the rewriting itself, and what is known about the operands
//!   that lets a check be left out;
//! * [`checks`]: what the checks pay for, by walking the values they are given;
//! * [`runtime`]: the hooks as a render calls them, with the operators they compute and the
//!   checked `namespace`, `dict` and `debug`.

mod checks;
mod constants;
mod hook;
mod rewrite;
mod runtime;
mod source;

use std::collections::BTreeMap;

use minijinja::machinery::{self, CodeGenerator, Instructions};
use minijinja::syntax::SyntaxConfig;
use minijinja::{AutoEscape, Environment, Error, Value};

pub(super) use checks::check_method;
pub(super) use runtime::install;
pub(super) use source::check_source;

use constants::check_constants;
use rewrite::rewrite;

/// A template compiled and rewritten: the instructions of its body and of its blocks.
pub(super) struct Compiled<'s> {
    body: Instructions<'s>,
    blocks: BTreeMap<&'s str, Instructions<'s>>,
}

/// Parses and compiles `source`, and rewrites its instructions (see the module comment).
pub(super) fn compile<'s>(
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
pub(super) fn eval(
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
