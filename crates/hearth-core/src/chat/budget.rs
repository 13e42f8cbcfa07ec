//! The bounds a chat template renders under. A template comes with the model file, so it is
//! untrusted code: a loop of loops or `'a' * 10**9` must end in an error, quickly and with
//! little memory, not hang the CLI or take a browser tab down.
//!
//! * minijinja's fuel: every instruction costs one, and every 64 bytes of data the template
//!   creates cost one more, charged before large strings are built. Since every loop
//!   iteration runs at least one instruction, the fuel also caps the iterations of all loops
//!   together.
//! * A cap on the text the template writes (into the output, or into a capture such as a
//!   macro's body), checked as it is written.
//! * A recursion limit (macros calling themselves, nested loops and blocks) well under
//!   minijinja's default, so deep recursion fails before it exhausts wasm's 1 MiB stack.
//! * Before compiling, a bound on the tokens of one tag, on the nesting of blocks (an
//!   `{% elif %}` nests one level deeper) and on constant lists: minijinja parses, compiles
//!   and drops a chain such as `1 + 1 + ...` by recursing once per link, and computes a
//!   constant expression as it compiles, without fuel (`[1] * 10**7 + [] + ...`).
//! * A nesting and size check of the values printed, and of those given to `tojson`,
//!   `string` and `join`: minijinja formats a value by recursing once per level and visiting a
//!   shared item every time it occurs, so a list a loop nested 50,000 deep overflows the stack
//!   and one doubled 64 times (`x = [x, x]`) never finishes.
//! * `str.format` pays for its padding before it pads (`'{:>1000000000}'.format(x)`).
//! * Natively, a stack the deepest value the fuel allows can be built and dropped on:
//!   minijinja drops a nested list by recursing once per level (a 1 MiB stack holds about
//!   5,000), and 500,000 fuel builds one about 70,000 deep, so the render runs on a thread
//!   with a 64 MiB stack.
//!
//! Known gaps, inside minijinja: comparing or `~`-joining such values, and a chain of more
//! than 32 list `+` (materialised uncharged), are not bounded here; in the browser the
//! package's abort watchdog ends a worker they hold (pkg/index.js). Nor, in wasm32 (no
//! threads, and the JS engine's own call stack), is dropping a value nested more than about
//! 10,000 deep: the call fails with "Maximum call stack size exceeded".

use std::io;

use minijinja::value::ValueKind;
use minijinja::{Error, ErrorKind, State, Value};

/// What one render may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// minijinja fuel: about one per instruction plus one per 64 bytes of data created.
    pub fuel: u64,
    /// Bytes of rendered text.
    pub max_output: usize,
    /// minijinja's recursion counter (a macro call counts several levels).
    pub recursion: usize,
}

impl Default for Budget {
    /// Real templates (Qwen3's, Llama 3's, Llama 2's) render a 1 MB conversation (far more
    /// than a context holds) with about a quarter of this fuel; see the `chat_budget` tests.
    /// It bounds a render to a fraction of a second and about 32 MB of data created.
    fn default() -> Self {
        Budget {
            fuel: 500_000,
            max_output: 4 << 20,
            recursion: 100,
        }
    }
}

/// Stack for a render: enough for the deepest value the default fuel can build (see above).
#[cfg(not(target_arch = "wasm32"))]
const RENDER_STACK: usize = 64 << 20;

/// Runs `render` on a thread with [`RENDER_STACK`] bytes of stack (only the pages touched are
/// committed), or on this one where there are no threads; fails only if no thread can start.
pub(crate) fn with_render_stack<T: Send>(render: impl FnOnce() -> T + Send) -> io::Result<T> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("chat template".into())
                .stack_size(RENDER_STACK)
                .spawn_scoped(scope, render)?;
            Ok(handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        })
    }
    #[cfg(target_arch = "wasm32")]
    {
        Ok(render())
    }
}

/// Deepest value printed or given to `tojson`; Python's own limit is about 1,000.
pub const MAX_NESTING: usize = 128;

/// Marks an error of this module's checks, to tell it from other render errors.
pub(crate) const OVER_BUDGET: &str = "over budget: ";

pub(crate) fn over_budget(msg: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("{OVER_BUDGET}{msg}"))
}

/// Refuses a list or mapping nested deeper than [`MAX_NESTING`] or with more items in all
/// than `max_output / 16` (counting a shared item each time it occurs, as printing does), and
/// charges the items visited. Iterative, with one iterator per level.
pub(crate) fn check_printable(
    state: &State,
    value: &Value,
    max_output: usize,
) -> Result<(), Error> {
    let max_items = max_output / 16;
    let nested = |v: &Value| {
        matches!(
            v.kind(),
            ValueKind::Seq | ValueKind::Map | ValueKind::Iterable
        )
    };
    if !nested(value) {
        return Ok(());
    }
    let mut levels = vec![(value.clone(), value.try_iter()?)];
    let mut items = 0usize;
    while let Some((container, iter)) = levels.last_mut() {
        let Some(item) = iter.next() else {
            levels.pop();
            continue;
        };
        items += 1;
        if items % 8 == 0 {
            state.consume_fuel(1)?;
        }
        if items > max_items {
            return Err(over_budget(format!(
                "a value with more than {max_items} items to print"
            )));
        }
        // A mapping iterates its keys; the values are what nest.
        let item = if container.kind() == ValueKind::Map {
            container.get_item(&item)?
        } else {
            item
        };
        if nested(&item) {
            if levels.len() >= MAX_NESTING {
                return Err(over_budget(format!(
                    "a value nested deeper than {MAX_NESTING} levels"
                )));
            }
            let iter = item.try_iter()?;
            levels.push((item, iter));
        }
    }
    Ok(())
}

/// What `str.format` may pad to, at most: the sum of the numbers in the format string (widths
/// and precisions are literal numbers there).
pub(crate) fn format_padding_bound(format: &str) -> u64 {
    format
        .split(|c: char| !c.is_ascii_digit())
        .filter(|run| !run.is_empty())
        .map(|run| run.parse::<u64>().unwrap_or(u64::MAX))
        .fold(0u64, u64::saturating_add)
}

/// Marks the error of a write past the output cap.
pub(crate) const OUTPUT_CAP: &str = "over budget, output: ";

/// The bytes written so far in a render, against the output cap.
#[derive(Default)]
struct Written(usize);

/// Counts `len` more bytes of output, failing past `cap`.
pub(crate) fn count_output(state: &mut State, len: usize, cap: usize) -> Result<(), Error> {
    let written = state.get_or_insert_extension(Written::default());
    written.0 = written.0.saturating_add(len);
    if written.0 > cap {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{OUTPUT_CAP}the output cap was reached"),
        ));
    }
    Ok(())
}
