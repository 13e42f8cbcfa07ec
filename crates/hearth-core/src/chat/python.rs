//! Python's behaviour where minijinja's differs, as `transformers` renders a template: its
//! string, dict and list methods, how it prints `None`, booleans and floats, and `strftime`
//! for `strftime_now`. What may be printed or walked is checked first (see [`super::budget`]).

use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Error, ErrorKind, State};

use super::budget::{self, check_printable, count_output};
use super::{guard, TemplateValue};

/// Python's string, dict and list methods (minijinja-contrib's pycompat), with `str.format`
/// paying for its padding first, and arguments that are lists or mappings checked as
/// [`guard::check_method`] says (at most `cap` bytes of text where they are printed).
pub(super) fn python_method(
    state: &mut State,
    value: &TemplateValue,
    method: &str,
    args: &[TemplateValue],
    cap: usize,
) -> Result<TemplateValue, Error> {
    if let (Some(format), "format") = (value.as_str(), method) {
        state.consume_fuel(budget::format_padding_bound(format) / 64)?;
    }
    guard::check_method(state, value, method, args, cap)?;
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Prints values as Python's `str` does where it differs from minijinja, after checking that
/// a list or mapping can be printed at all (at most `cap` items), and counts the text against
/// the output cap of `cap` bytes.
pub(super) fn python_formatter(
    out: &mut minijinja::Output,
    state: &mut State,
    value: &TemplateValue,
    cap: usize,
) -> Result<(), Error> {
    check_printable(state, value, cap)?;
    let text = match value.kind() {
        ValueKind::None => "None".to_string(),
        ValueKind::Bool => if value.is_true() { "True" } else { "False" }.to_string(),
        ValueKind::Number if !value.is_integer() => match f64::try_from(value.clone()) {
            Ok(f) => python_float(f),
            Err(_) => escaped(state, value)?,
        },
        _ => match value.as_str() {
            // Written as it is: counted without a copy.
            Some(s) if value.is_safe() || matches!(state.auto_escape(), AutoEscape::None) => {
                count_output(state, s.len(), cap)?;
                return minijinja::escape_formatter(out, state, value);
            }
            _ => escaped(state, value)?,
        },
    };
    count_output(state, text.len(), cap)?;
    out.write_str(&text).map_err(Error::from)
}

/// What minijinja's formatter writes for `value`.
fn escaped(state: &mut State, value: &TemplateValue) -> Result<String, Error> {
    let mut text = String::new();
    let mut out = minijinja::machinery::make_string_output(&mut text);
    minijinja::escape_formatter(&mut out, state, value)?;
    drop(out);
    Ok(text)
}

/// Python's `repr` of a float: shortest round-trip digits, exponent form outside 1e-4..1e16.
pub(super) fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let body = if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                format!("{digits}{}.0", "0".repeat(int_len - digits.len()))
            } else {
                format!("{}.{}", &digits[..int_len], &digits[int_len..])
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        format!(
            "{first}{frac}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    };
    format!("{sign}{body}")
}

/// `strftime` for the directives chat templates use (dates in UTC).
pub(super) fn strftime(unix: i64, format: &str) -> Result<String, Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday.
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{:02}", secs / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs % 60)),
            Some('%') => out.push('%'),
            other => {
                let d = other.map_or(String::new(), String::from);
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: %{d} is not supported"),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_repr() {
        for (x, s) in [
            (18.0, "18.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (1e16, "1e+16"),
            (123456.789, "123456.789"),
            (-0.0, "-0.0"),
            (2.5e-4, "0.00025"),
        ] {
            assert_eq!(python_float(x), s);
        }
    }

    #[test]
    fn strftime_formats_utc_dates() {
        // 2024-07-23 14:05:09 UTC, a Tuesday.
        assert_eq!(
            strftime(1_721_743_509, "%d %b %Y %H:%M:%S %A %B %y %m %a %%").unwrap(),
            "23 Jul 2024 14:05:09 Tuesday July 24 07 Tue %"
        );
        assert!(strftime(0, "%Q").is_err());
    }
}
