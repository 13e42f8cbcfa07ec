//! The hooks as a render calls them ([`install`] registers them): each pays for its operands
//! and then does what the instruction it replaces or precedes would do. Beside them, the
//! checked `namespace`, `dict` and `debug`, and what a namespace or `loop.changed()` may keep.

use std::sync::Arc;

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Rest, ValueKind, ValueOrKwargs};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, Value};

use super::checks::{check_all, check_compare, check_in, check_key, check_keys, materialize};
use super::hook::{filter_kind, Cmp, FilterKind, Hook, HOOKS};
use crate::chat::budget::{check_printable, ensure_fuel, over_budget, stored, walk, Limit, Tally};

/// Registers the hooks, and the checked `namespace`, `dict` and `debug`, in `env`;
/// `max_output` is the output cap, which also bounds what may be converted to a string.
pub(in crate::chat) fn install(env: &mut Environment<'_>, max_output: usize) {
    for (hook, name) in HOOKS {
        env.add_global(name, Value::from_object(Hooked { hook, max_output }));
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
