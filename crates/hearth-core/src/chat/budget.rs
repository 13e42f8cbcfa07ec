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
//! * Every operation that walks a value pays for the walk first, in fuel, and refuses a value
//!   nested deeper than [`MAX_NESTING`]: printing it or making a string of it (`~`, `string`,
//!   `join`, string filters and methods, `raise_exception`: at most `max_output / 16` items
//!   and `max_output` bytes of text), `tojson`, comparing it (`==`, `<`, `in`, tests,
//!   `loop.changed`; strings pay for their bytes), sorting or deduplicating it, using it as a
//!   key. minijinja walks a value once per level and visits a shared item every time it
//!   occurs, so a list a loop nested 50,000 deep overflows the stack, and two doubled 64
//!   times (`x = [x, x]`) take for ever to compare or print. The template's compiled
//!   instructions are rewritten to make these checks (see [`super::guard`]).
//! * No value nested deeper than [`MAX_NESTING`] is stored in a variable, passed to a macro
//!   or held by a namespace, and a namespace holds neither a namespace nor a loop object: no
//!   value is nested deeper than that plus what one tag adds, and none holds itself.
//!   minijinja drops (and iterates) a value by recursing once per level, which in a browser
//!   fails past about 10,000 levels ("Maximum call stack size exceeded"). A value is stored
//!   with its lazy sequences made lists (see [`stored`]): `x * n`, `x[a:b]`, `x + y` wrap
//!   their operands without showing it in their items, so applied to their own result in a
//!   loop they would pile up unseen (and `chain` makes its operands lists first).
//! * Adding two lists needs the fuel their concatenation would cost, which minijinja charges
//!   only after it has materialised one (it does once 32 lazy sums are stacked).
//! * `str.format` pays for its padding before it pads (`'{:>1000000000}'.format(x)`).
//! * Natively, the render runs on a thread with a 64 MiB stack, far more than the bounds
//!   above need.
//!
//! These bounds are stricter than Jinja in ways real templates do not meet: a tag of more than
//! 500 tokens, blocks nested 100 deep, a constant list of 10,000 items, a value nested 128
//! deep, a namespace or a loop object stored in a namespace.
//!
//! Left: minijinja iterates a sum of lazy lists (`x + y`, stacked up to 32 deep within one
//! tag) by recursing through the sums for each item, and charges the item once; and the fuel
//! a walk pays is set for native code, which runs a few times faster than wasm.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectExt, ObjectRepr, Tuple, ValueKind};
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

/// Stack for a render.
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

/// Deepest value a template may print, compare, store or pass on; Python's own limit is
/// about 1,000.
pub const MAX_NESTING: usize = 128;

/// Marks an error of this module's checks, to tell it from other render errors.
pub(crate) const OVER_BUDGET: &str = "over budget: ";

/// Marks the error of a write past the output cap.
pub(crate) const OUTPUT_CAP: &str = "over budget, output: ";

pub(crate) fn over_budget(msg: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("{OVER_BUDGET}{msg}"))
}

/// What a walk may visit besides [`MAX_NESTING`] levels, and what it pays.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limit {
    /// Items (counting a shared item each time it occurs, as printing does).
    items: u64,
    /// Bytes of the strings among them.
    bytes: u64,
    /// Items visited for one fuel.
    per_fuel: u64,
    /// Whether the bytes of the strings visited cost too, one fuel per 64: comparing or
    /// hashing a string reads it all. (Printing one is charged for the text it makes.)
    bytes_cost: bool,
    /// What the value is walked for, for the errors.
    purpose: &'static str,
}

impl Limit {
    /// Printing or converting to a string: the text must fit the output cap.
    pub(crate) fn print(max_output: usize) -> Self {
        Limit {
            items: max_output as u64 / 16,
            bytes: max_output as u64,
            per_fuel: 4,
            bytes_cost: false,
            purpose: "to print",
        }
    }

    /// Comparing, sorting, hashing: only the fuel bounds the items, and a walk ends in a
    /// fraction of a second (a few million items) when it has used up the fuel.
    pub(crate) const VISIT: Limit = Limit {
        items: u64::MAX,
        bytes: u64::MAX,
        per_fuel: 2,
        bytes_cost: true,
        purpose: "",
    };

    /// Whether the bytes of strings cost.
    pub(crate) fn bytes_cost(&self) -> bool {
        self.bytes_cost
    }

    /// Storing: only the nesting counts, and a list or mapping held twice is visited once.
    pub(crate) const STORE: Limit = Limit {
        items: u64::MAX,
        bytes: u64::MAX,
        per_fuel: 2,
        bytes_cost: false,
        purpose: "",
    };
}

/// Counts the items of one or more walks and charges their fuel.
pub(crate) struct Tally {
    limit: Limit,
    items: u64,
    bytes: u64,
}

impl Tally {
    pub(crate) fn new(limit: Limit) -> Self {
        Tally {
            limit,
            items: 0,
            bytes: 0,
        }
    }

    /// The fuel the walks charged.
    pub(crate) fn fuel(&self) -> u64 {
        let bytes = if self.limit.bytes_cost {
            self.bytes / 64
        } else {
            0
        };
        self.items / self.limit.per_fuel + bytes
    }

    fn visit(&mut self, state: &State, item: &Value) -> Result<(), Error> {
        self.items += 1;
        if self.items % self.limit.per_fuel == 0 {
            state.consume_fuel(1)?;
        }
        if self.items > self.limit.items {
            return Err(over_budget(format!(
                "a value with more than {} items {}",
                self.limit.items, self.limit.purpose
            )));
        }
        if let Some(s) = item.as_str() {
            let before = self.bytes;
            self.bytes = self.bytes.saturating_add(s.len() as u64);
            if self.bytes > self.limit.bytes {
                return Err(over_budget(format!(
                    "a value with more than {} bytes of text {}",
                    self.limit.bytes, self.limit.purpose
                )));
            }
            if self.limit.bytes_cost {
                state.consume_fuel(self.bytes / 64 - before / 64)?;
            }
        }
        Ok(())
    }
}

type Iter = Box<dyn Iterator<Item = Value> + Send + Sync>;

/// The values a list or mapping holds (a mapping's keys and values), or `None` for anything
/// else.
fn children(value: &Value) -> Option<Iter> {
    if !matches!(
        value.kind(),
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable
    ) {
        return None;
    }
    let obj = value.as_object()?;
    match value.kind() {
        ValueKind::Map => Some(Box::new(obj.try_iter_pairs()?.flat_map(|(k, v)| [k, v]))),
        _ => obj.try_iter(),
    }
}

/// Whether `value` holds other values: a walk goes into it.
pub(crate) fn is_container(value: &Value) -> bool {
    matches!(
        value.kind(),
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable
    )
}

/// An iterative walk over a value, one item a step, with one iterator per level.
struct Walker {
    levels: Vec<Iter>,
}

impl Walker {
    /// Starts a walk at `value`, which counts as an item.
    fn new(
        state: &State,
        tally: &mut Tally,
        value: &Value,
        check: &mut dyn FnMut(&Value) -> Result<(), Error>,
    ) -> Result<Self, Error> {
        tally.visit(state, value)?;
        check(value)?;
        Ok(Walker {
            levels: children(value).into_iter().collect(),
        })
    }

    /// Visits the next item; `false` once every item was visited.
    fn step(
        &mut self,
        state: &State,
        tally: &mut Tally,
        check: &mut dyn FnMut(&Value) -> Result<(), Error>,
    ) -> Result<bool, Error> {
        let Some(level) = self.levels.last_mut() else {
            return Ok(false);
        };
        let Some(item) = level.next() else {
            self.levels.pop();
            return Ok(!self.levels.is_empty());
        };
        tally.visit(state, &item)?;
        check(&item)?;
        if let Some(items) = children(&item) {
            if self.levels.len() >= MAX_NESTING {
                return Err(too_deep());
            }
            self.levels.push(items);
        }
        Ok(true)
    }
}

/// Walks all of `value` (see [`Walker`]), calling `check` on every item.
pub(crate) fn walk(
    state: &State,
    tally: &mut Tally,
    value: &Value,
    check: &mut dyn FnMut(&Value) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut walker = Walker::new(state, tally, value, check)?;
    while walker.step(state, tally, check)? {}
    Ok(())
}

/// Walks `a` and `b` a step each in turn until one of them is done: comparing two values
/// visits at most the items of the smaller one.
pub(crate) fn walk_pair(state: &State, a: &Value, b: &Value) -> Result<(), Error> {
    let mut tally = Tally::new(Limit::VISIT);
    let mut none = |_: &Value| Ok(());
    let mut a = Walker::new(state, &mut tally, a, &mut none)?;
    let mut b = Walker::new(state, &mut tally, b, &mut none)?;
    while a.step(state, &mut tally, &mut none)? && b.step(state, &mut tally, &mut none)? {}
    Ok(())
}

fn too_deep() -> Error {
    over_budget(format!("a value nested deeper than {MAX_NESTING} levels"))
}

/// The address of a list or mapping that holds its items (a shared one is walked once by
/// [`stored`]).
fn address(value: &Value) -> Option<usize> {
    fn at<T>(item: &T) -> usize {
        item as *const T as usize
    }
    value
        .downcast_object_ref::<Vec<Value>>()
        .map(at)
        .or_else(|| {
            value
                .downcast_object_ref::<BTreeMap<Value, Value>>()
                .map(at)
        })
        .or_else(|| value.downcast_object_ref::<Tuple>().map(at))
        .or_else(|| value.downcast_object_ref::<Items>().map(at))
}

/// The items of a lazy sequence, as [`stored`] keeps them: an iterable like those of
/// minijinja ([`Value::make_object_iterable`]), that tells its length if the sequence did.
pub(crate) struct Items {
    items: Vec<Value>,
    sized: bool,
}

impl Items {
    pub(crate) fn value(items: Vec<Value>, sized: bool) -> Value {
        Value::from_object(Items { items, sized })
    }
}

impl fmt::Debug for Items {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As minijinja's iterables print themselves.
        f.debug_struct("<iterator>").finish()
    }
}

impl Object for Items {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Iterable
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        if self.sized {
            self.mapped_enumerator(|this| Box::new(this.items.iter().cloned()))
        } else {
            self.mapped_enumerator(|this| Box::new(Unsized(this.items.iter().cloned())))
        }
    }
}

/// Hashes an address (a multiple of 8) for [`stored`]'s table.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// How [`stored`] keeps a list or mapping.
enum Keep {
    /// A list, tuple, mapping or [`Items`]: made again if an item is stored otherwise.
    List,
    Tuple,
    Map,
    Items {
        sized: bool,
    },
    /// A lazy sequence: [`Items`] instead.
    Lazy {
        sized: bool,
    },
    /// Anything else (a namespace, a loop object, the conversation's messages): as it is.
    AsItIs,
}

/// A list or mapping being walked by [`stored`].
struct Level {
    value: Value,
    items: Iter,
    keep: Keep,
    /// The items as stored (but for [`Keep::AsItIs`]); a mapping's keys and values in turn.
    stored: Vec<Value>,
    /// Whether an item is stored otherwise than it was.
    changed: bool,
    /// Nesting of the deepest item.
    deepest: usize,
}

impl Level {
    fn new(value: &Value) -> Option<Self> {
        let items = children(value)?;
        let keep = if value.downcast_object_ref::<Vec<Value>>().is_some() {
            Keep::List
        } else if value.downcast_object_ref::<Tuple>().is_some() {
            Keep::Tuple
        } else if value
            .downcast_object_ref::<BTreeMap<Value, Value>>()
            .is_some()
        {
            Keep::Map
        } else if let Some(items) = value.downcast_object_ref::<Items>() {
            Keep::Items { sized: items.sized }
        } else if value.kind() == ValueKind::Iterable {
            Keep::Lazy {
                sized: value.as_object().and_then(|o| o.enumerator_len()).is_some(),
            }
        } else {
            Keep::AsItIs
        };
        Some(Level {
            value: value.clone(),
            items,
            keep,
            stored: Vec::new(),
            changed: false,
            deepest: 0,
        })
    }

    /// Keeps an item as stored, where the value may be made again.
    fn keep(&mut self, item: Value) {
        if !matches!(self.keep, Keep::AsItIs) {
            self.stored.push(item);
        }
    }

    /// The value as stored, and whether that is another value.
    fn finish(self, state: &State) -> Result<(Value, bool), Error> {
        let rebuilt = |state: &State, items: &Vec<Value>| -> Result<(), Error> {
            // A slot costs half a fuel, as for any list.
            state.consume_fuel(items.len() as u64 / 2)
        };
        Ok(match self.keep {
            Keep::Lazy { sized } => {
                rebuilt(state, &self.stored)?;
                (Items::value(self.stored, sized), true)
            }
            Keep::Items { sized } if self.changed => {
                rebuilt(state, &self.stored)?;
                (Items::value(self.stored, sized), true)
            }
            Keep::List if self.changed => {
                rebuilt(state, &self.stored)?;
                (Value::from(self.stored), true)
            }
            Keep::Tuple if self.changed => {
                rebuilt(state, &self.stored)?;
                (Value::from(Tuple::from(self.stored)), true)
            }
            Keep::Map if self.changed => {
                rebuilt(state, &self.stored)?;
                let mut map = BTreeMap::new();
                let mut items = self.stored.into_iter();
                while let (Some(key), Some(value)) = (items.next(), items.next()) {
                    map.insert(key, value);
                }
                (Value::from(map), true)
            }
            _ => (self.value, false),
        })
    }
}

/// An iterator that does not tell its length, as the lazy sequence it stands for did not.
struct Unsized<I>(I);

impl<I: Iterator> Iterator for Unsized<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        self.0.next()
    }
}

/// `value` as it may be stored in a variable or a namespace or passed to a macro: refused if
/// it is nested deeper than [`MAX_NESTING`], with the lazy sequences in it replaced by lists
/// of their items (minijinja's `x * n`, `x[a:b]`, `x + y` and the like wrap their operands,
/// so stored and applied again in a loop they would nest without end, and without showing
/// it in their items). `check` is called on every list or mapping. A list or mapping that
/// occurs more than once is walked once (and kept alive meanwhile, so that its address is not
/// reused); the items visited are charged.
pub(crate) fn stored(
    state: &State,
    value: &Value,
    check: &mut dyn FnMut(&Value) -> Result<(), Error>,
) -> Result<Value, Error> {
    let mut tally = Tally::new(Limit::STORE);
    tally.visit(state, value)?;
    let Some(root) = Level::new(value) else {
        return Ok(value.clone());
    };
    check(value)?;
    // By address: the value, as stored, whether that is another value, and its nesting.
    let mut seen: HashMap<usize, (Value, Value, bool, usize), BuildHasherDefault<AddressHasher>> =
        HashMap::default();
    let mut levels = vec![root];
    loop {
        let depth_here = levels.len();
        let level = levels.last_mut().expect("a level");
        let Some(item) = level.items.next() else {
            let done = levels.pop().expect("a level");
            let depth = done.deepest + 1;
            let original = done.value.clone();
            let (value, changed) = done.finish(state)?;
            if let Some(addr) = address(&original) {
                seen.insert(addr, (original, value.clone(), changed, depth));
            }
            let Some(parent) = levels.last_mut() else {
                return Ok(value);
            };
            parent.deepest = parent.deepest.max(depth);
            parent.changed |= changed;
            parent.keep(value);
            continue;
        };
        if !is_container(&item) {
            tally.visit(state, &item)?;
            level.keep(item);
            continue;
        }
        if let Some((_, value, changed, depth)) = address(&item).and_then(|addr| seen.get(&addr)) {
            level.deepest = level.deepest.max(*depth);
            level.changed |= changed;
            level.keep(value.clone());
            if depth_here + depth > MAX_NESTING {
                return Err(too_deep());
            }
            continue;
        }
        tally.visit(state, &item)?;
        check(&item)?;
        if depth_here >= MAX_NESTING {
            return Err(too_deep());
        }
        match Level::new(&item) {
            Some(next) => {
                // Each list or mapping is made again, or at least iterated: a fuel.
                state.consume_fuel(1)?;
                levels.push(next)
            }
            None => levels.last_mut().expect("a level").keep(item),
        }
    }
}

/// Refuses a list or mapping nested deeper than [`MAX_NESTING`] or too large to print in
/// `max_output` bytes (see [`Limit::print`]), and charges the items visited.
pub(crate) fn check_printable(
    state: &State,
    value: &Value,
    max_output: usize,
) -> Result<(), Error> {
    if !is_container(value) {
        return Ok(());
    }
    walk(
        state,
        &mut Tally::new(Limit::print(max_output)),
        value,
        &mut |_| Ok(()),
    )
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

/// Fails unless `fuel` could still be used: for work that is charged once it is done.
pub(crate) fn ensure_fuel(state: &State, fuel: u64) -> Result<(), Error> {
    match state.fuel_levels() {
        Some((_, remaining)) if fuel >= remaining => Err(Error::from(ErrorKind::OutOfFuel)),
        _ => Ok(()),
    }
}

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
