//! The `tojson` filter of `transformers`, which writes what Python's `json.dumps` writes, within
//! the output cap and [`MAX_NESTING`] levels.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, State};

use super::budget::{check_printable, over_budget, MAX_NESTING};
use super::python::python_float;
use super::TemplateValue;

/// The `tojson` filter of `transformers`: Python's `json.dumps` with `ensure_ascii=False`.
/// Its text may be at most `cap` bytes (the output cap: a larger one could not be rendered).
pub(super) fn tojson(
    state: &State,
    value: &TemplateValue,
    kwargs: Kwargs,
    cap: usize,
) -> Result<TemplateValue, Error> {
    let indent: Option<TemplateValue> = kwargs.get("indent")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    // Writing JSON is slower than printing: the items are paid for, and counted, first.
    check_printable(state, value, cap)?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match (v.as_i64(), v.as_str()) {
            (Some(n), _) => {
                let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
                if n > cap {
                    return Err(over_budget(format!(
                        "tojson: an indent of {n} passes the output cap"
                    )));
                }
                Some(" ".repeat(n))
            }
            (_, Some(s)) => Some(s.to_string()),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be a number or a string",
                ))
            }
        },
    };
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be two strings",
            ))
        }
        // Python drops the space after "," when indenting, where it would end a line.
        None if indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    let mut out = String::new();
    let opts = JsonOptions {
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
        cap,
    };
    write_json(&mut out, value, &opts, 0)?;
    // The engine charges the result's bytes as it charges any string's; writing them walked
    // the value, which costs a fuel per 16 bytes more.
    state.consume_fuel(out.len() as u64 / 16)?;
    Ok(TemplateValue::from_safe_string(out))
}

struct JsonOptions {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
    /// Most bytes of text.
    cap: usize,
}

fn write_json(
    out: &mut String,
    v: &TemplateValue,
    o: &JsonOptions,
    depth: usize,
) -> Result<(), Error> {
    if depth > MAX_NESTING {
        return Err(over_budget(format!(
            "tojson: a value nested deeper than {MAX_NESTING} levels"
        )));
    }
    check_cap(out, o)?;
    // The cap is checked after each level of indent, since an indent may be long.
    let newline = |out: &mut String, depth: usize| -> Result<(), Error> {
        if let Some(ind) = &o.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(ind);
                check_cap(out, o)?;
            }
        }
        Ok(())
    };
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number if v.is_integer() => out.push_str(&v.to_string()),
        ValueKind::Number => out.push_str(&python_float(f64::try_from(v.clone())?)),
        ValueKind::String => json_string(out, v.as_str().unwrap_or_default(), o.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<TemplateValue> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(out, depth + 1)?;
                write_json(out, item, o, depth + 1)?;
            }
            newline(out, depth)?;
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<TemplateValue> = v.try_iter()?.collect();
            if o.sort_keys {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(out, depth + 1)?;
                match key.as_str() {
                    Some(k) => json_string(out, k, o.ensure_ascii),
                    None => json_string(out, &key.to_string(), o.ensure_ascii),
                }
                out.push_str(&o.key_sep);
                write_json(out, &v.get_item(key)?, o, depth + 1)?;
            }
            newline(out, depth)?;
            out.push('}');
        }
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a {kind} is not JSON serializable"),
            ));
        }
    }
    Ok(())
}

fn check_cap(out: &str, o: &JsonOptions) -> Result<(), Error> {
    if out.len() > o.cap {
        return Err(over_budget(format!(
            "tojson: the text passed the output cap of {} bytes",
            o.cap
        )));
    }
    Ok(())
}

/// A JSON string literal as Python writes it.
fn json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
