//! What the hooks pay for before an operation runs: walks over the values it would walk
//! (comparing, printing, looking up a key, testing membership), and lazy sequences made
//! lists where a value is kept.

use std::collections::BTreeMap;

use minijinja::value::{ObjectRepr, Tuple, ValueKind};
use minijinja::{Error, State, Value};

use crate::chat::budget::{
    check_printable, ensure_fuel, is_container, walk, walk_pair, Items, Limit, Tally,
};

/// Pays for a method's walk over its arguments where they are lists or mappings: `str.join`
/// and `str.format` print them, `dict.get` compares its key with a few keys, `list.count`
/// compares the argument with every item.
pub(in crate::chat) fn check_method(
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

/// Walks the keys of mappings that are themselves lists or mappings: a lookup compares the
/// key with several of a mapping's keys.
pub(super) fn check_keys(state: &State, maps: &[Value]) -> Result<(), Error> {
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
pub(super) fn check_key(state: &State, key: &Value) -> Result<(), Error> {
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
pub(super) fn check_all(state: &State, values: &[Value], limit: Limit) -> Result<u64, Error> {
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
pub(super) fn check_compare(state: &State, a: &Value, b: &Value) -> Result<(), Error> {
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        state.consume_fuel(x.len().min(y.len()) as u64 / 64)?;
    } else if is_container(a) && is_container(b) && !minijinja::tests::is_sameas(a, b) {
        walk_pair(state, a, b)?;
    }
    Ok(())
}

/// Pays for `needle in container`: a string looks for the needle's text; a list compares the
/// needle with every item, a mapping with a few keys.
pub(super) fn check_in(
    state: &State,
    needle: &Value,
    container: &Value,
    cap: usize,
) -> Result<(), Error> {
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
pub(super) fn materialize(state: &State, value: &Value) -> Result<Value, Error> {
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
